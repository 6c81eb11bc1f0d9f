"""Translate configuration and stored releases into the core's records.

The core never sees pydantic models or rows: this module is the one place that knows how a
`conveyor.yaml` environment becomes a ``RolloutSpec`` and how a stored release becomes an
``InstanceSpec`` the runtime can start.
"""

from __future__ import annotations

import shlex
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from conveyor.config.loader import LoadedProject
from conveyor.config.schema import (
    AnalysisStepConfig,
    PauseConfig,
    PauseStepConfig,
    ProbeConfig,
    SetWeightStepConfig,
)
from conveyor.core.model import InstanceSpec, ProbeSpec
from conveyor.core.state import (
    AnalysisStep,
    HeaderRouteStep,
    PauseStep,
    RolloutSpec,
    SetWeightStep,
    Step,
    StrategySpec,
    Triggers,
)
from conveyor.store.records import ReleaseRecord


def strategy_spec(project: LoadedProject, service: str, env: str, desired: int) -> StrategySpec:
    strategy = project.config.environment(env).strategy
    kind = strategy.kind
    if kind == "rolling":
        surge, unavailable = project.config.rolling_counts(strategy, desired)
        return StrategySpec(kind="rolling", max_surge=surge, max_unavailable=unavailable)
    if kind == "canary":
        return StrategySpec(
            kind="canary",
            scale_down_delay=float(strategy.scale_down_delay),  # type: ignore[union-attr]
            steps=tuple(_step(s) for s in strategy.steps),  # type: ignore[union-attr]
            background_analysis=strategy.analysis,  # type: ignore[union-attr]
        )
    if kind == "blue_green":
        return StrategySpec(
            kind="blue_green",
            scale_down_delay=float(strategy.scale_down_delay),  # type: ignore[union-attr]
            auto_promote=bool(strategy.auto_promote),  # type: ignore[union-attr]
        )
    return StrategySpec(kind="recreate")


def _step(step: Any) -> Step:
    if isinstance(step, SetWeightStepConfig):
        return SetWeightStep(step.set_weight)
    if isinstance(step, PauseStepConfig):
        pause = step.pause
        seconds = pause.duration if isinstance(pause, PauseConfig) else pause
        return PauseStep(None if seconds is None else float(seconds))
    if isinstance(step, AnalysisStepConfig):
        return AnalysisStep(step.analysis)
    return HeaderRouteStep(step.set_header_route.header, step.set_header_route.value)


def triggers(project: LoadedProject, env: str) -> Triggers:
    rb = project.config.effective_rollback(env)
    return Triggers(
        error_rate=float(rb.error_rate),
        min_requests=int(rb.min_requests),
        window=float(rb.window),
        max_restarts=int(rb.max_restarts),
        verification=float(rb.verification),
    )


def rollout_spec(
    project: LoadedProject,
    *,
    release_id: int,
    revision: int,
    service: str,
    env: str,
    version: str,
    desired: int,
    stable: ReleaseRecord | None,
) -> RolloutSpec:
    svc = project.config.service(service)
    return RolloutSpec(
        release_id=release_id,
        revision=revision,
        version=version,
        desired=desired,
        strategy=strategy_spec(project, service, env, desired),
        progress_deadline=float(project.config.environment(env).progress_deadline),
        triggers=triggers(project, env),
        stable_version=stable.template if stable else None,
        stable_revision=stable.revision if stable else None,
        stable_desired=stable.instances if stable else 0,
        preview_check=bool(svc.health and svc.health.readiness),
    )


def instance_template(project: LoadedProject, service: str) -> dict[str, Any]:
    """How instances of a release are started, frozen into the release when it is created.

    A rollback months later must start the old version exactly as it ran then, whatever
    `conveyor.yaml` says today, so the run command, port variable, probes and stop timings are
    stored with the release rather than read from the current config.
    """
    svc = project.config.service(service)
    health = svc.health
    return {
        "command": svc.run if isinstance(svc.run, str) else list(svc.run),
        "port_env": svc.port_env,
        "readiness": _probe_json(health.readiness if health else None),
        "liveness": _probe_json(health.liveness if health else None),
        "stop_grace": float(svc.stop.grace_period),
        "drain_timeout": float(svc.stop.drain_timeout),
    }


def _probe_json(config: ProbeConfig | None) -> dict[str, Any] | None:
    if config is None:
        return None
    return {
        "path": config.path,
        "timeout": float(config.timeout),
        "period": float(config.period),
        "initial_delay": float(config.initial_delay),
        "failure_threshold": config.failure_threshold,
        "success_threshold": config.success_threshold,
    }


def _probe(data: Mapping[str, Any] | None) -> ProbeSpec | None:
    return None if data is None else ProbeSpec(**data)


def command_text(command: str | Sequence[str]) -> str:
    return command if isinstance(command, str) else shlex.join(command)


def drain_timeout(release: ReleaseRecord) -> float:
    return float(release.spec["instance"]["drain_timeout"])


def instance_spec(
    project_name: str,
    release: ReleaseRecord,
    artifact_dir: Path,
    commit: str | None,
) -> InstanceSpec:
    """The runtime's recipe for one more instance of a stored release."""
    template = release.spec["instance"]
    environment = {
        **release.config,
        "CONVEYOR_SERVICE": release.service,
        "CONVEYOR_ENV": release.env,
        "CONVEYOR_VERSION": (commit or release.artifact_digest.removeprefix("sha256:"))[:12],
        "CONVEYOR_REVISION": str(release.revision),
        "CONVEYOR_ARTIFACT": release.artifact_digest,
    }
    command = template["command"]
    return InstanceSpec(
        instance_id=f"{release.service}-{release.env}-r{release.revision}-{uuid.uuid4().hex[:6]}",
        project=project_name,
        service=release.service,
        env=release.env,
        version=release.template,
        revision=release.revision,
        artifact_digest=release.artifact_digest,
        artifact_dir=artifact_dir,
        command=command if isinstance(command, str) else tuple(command),
        environment=environment,
        port_env=template["port_env"],
        readiness=_probe(template["readiness"]),
        liveness=_probe(template["liveness"]),
        stop_grace=float(template["stop_grace"]),
    )
