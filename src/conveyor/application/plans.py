"""From today's conveyor.yaml to a release's frozen plan: the one place config meets the core.

A plan is built once, when a release is created, from the config of that moment; after
that nothing reads the config on the release's behalf (see ``core.plan``). This module is
therefore the whole of "what a release takes from the file": the service's run command,
probes and stop timings, the environment's strategy, deadline, triggers and router, the
analysis templates its steps name, the notifications, the pinned port, and the user the
instances run as (``run_as``, checked against this host here: see ``check_run_as``).
"""

from __future__ import annotations

from collections.abc import Mapping

from conveyor.config.loader import LoadedProject
from conveyor.config.schema import (
    AnalysisStepConfig,
    CanaryStrategy,
    PauseConfig,
    PauseStepConfig,
    ProbeConfig,
    SetWeightStepConfig,
)
from conveyor.config.source import read_yaml
from conveyor.core.analysis import AnalysisTemplate
from conveyor.core.approval import ApprovalRule
from conveyor.core.model import ProbeSpec, SecretRef
from conveyor.core.plan import InstanceTemplate, NotifyTarget, ReleasePlan, StableRef
from conveyor.core.state import (
    AnalysisStep,
    HeaderRouteStep,
    PauseStep,
    SetWeightStep,
    Step,
    StrategySpec,
    Triggers,
)
from conveyor.errors import ConfigError, ConfigProblem, ConveyorError, NotFound
from conveyor.run_as import CREATE_HINT, UnknownUser, User, lookup, switch_problem


def release_plan(
    project: LoadedProject,
    *,
    service: str,
    env: str,
    artifact: str,
    commit: str | None,
    config: Mapping[str, str],
    stable: StableRef | None,
    instance: InstanceTemplate | None = None,
    secrets: Mapping[str, SecretRef] | None = None,
    authors: tuple[str, ...] = (),
) -> ReleasePlan:
    """The plan of a new release of ``artifact`` with ``config`` (already merged).

    ``secrets`` are the config keys whose value is a secret, as references: the plan is
    stored and shown, so it holds where a value is read, never the value.
    """
    desired = project.config.effective_instances(service, env)
    environment = project.config.environment(env)
    svc = project.config.service(service)
    strategy = strategy_spec(project, env, desired)
    return ReleasePlan(
        service=service,
        env=env,
        artifact=artifact,
        commit=commit,
        config=dict(config),
        secrets=dict(secrets or {}),
        instance=instance or instance_template(project, service),
        desired=desired,
        strategy=strategy,
        progress_deadline=float(environment.progress_deadline),
        triggers=triggers(project, env),
        preview_check=bool(svc.health and svc.health.readiness),
        analysis=analysis_templates(project, strategy),
        notify=tuple(
            NotifyTarget(n.webhook, event_kinds(n.events), n.secret_env)
            for n in project.config.notify
        ),
        router=environment.router,
        pinned_port=project.config.pinned_port(service, env),
        stable=stable,
        approval=approval_rule(project, env),
        authors=authors,
        retry=environment.retries.frozen(),
    )


def approval_rule(project: LoadedProject, env: str) -> ApprovalRule | None:
    declared = project.config.environment(env).approval
    if declared is None:
        return None
    return ApprovalRule(
        required=declared.required,
        reviewers=tuple(declared.from_),
        prevent_self_review=declared.prevent_self_review,
        wait_timer=float(declared.wait_timer),
        expires=float(declared.expires),
    )


RENAMED_EVENTS = {"verification.failed": "release.aborted"}
"""Ledger kinds that were renamed: a notify block naming the old one still hears the new."""


def event_kinds(names: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(RENAMED_EVENTS.get(name, name) for name in names))


def strategy_spec(project: LoadedProject, env: str, desired: int) -> StrategySpec:
    strategy = project.config.environment(env).strategy
    if strategy.kind == "rolling":
        surge, unavailable = project.config.rolling_counts(strategy, desired)
        return StrategySpec(
            kind="rolling",
            max_surge=surge,
            max_unavailable=unavailable,
            min_ready=float(strategy.min_ready),
        )
    if isinstance(strategy, CanaryStrategy):
        return StrategySpec(
            kind="canary",
            scale_down_delay=float(strategy.scale_down_delay),
            steps=tuple(_step(s) for s in strategy.steps),
            background_analysis=strategy.analysis,
        )
    if strategy.kind == "blue_green":
        return StrategySpec(
            kind="blue_green",
            scale_down_delay=float(strategy.scale_down_delay),
            auto_promote=bool(strategy.auto_promote),
        )
    return StrategySpec(kind="recreate")


def _step(step: object) -> Step:
    if isinstance(step, SetWeightStepConfig):
        return SetWeightStep(step.set_weight)
    if isinstance(step, PauseStepConfig):
        pause = step.pause
        seconds = pause.duration if isinstance(pause, PauseConfig) else pause
        return PauseStep(None if seconds is None else float(seconds))
    if isinstance(step, AnalysisStepConfig):
        return AnalysisStep(step.analysis)
    route = step.set_header_route  # type: ignore[attr-defined]
    return HeaderRouteStep(route.header, route.value)


def analysis_templates(
    project: LoadedProject, strategy: StrategySpec
) -> dict[str, AnalysisTemplate]:
    """The templates the strategy names, frozen; the config loader checked they exist."""
    names = [s.template for s in strategy.steps if isinstance(s, AnalysisStep)]
    if strategy.background_analysis:
        names.append(strategy.background_analysis)
    templates = project.config.analysis
    frozen: dict[str, AnalysisTemplate] = {}
    for name in names:
        if name not in templates:
            raise NotFound(
                f"analysis template '{name}' is not declared in conveyor.yaml",
                hint="declare it under analysis:, or change the canary step",
            )
        frozen[name] = templates[name].frozen()
    return frozen


def triggers(project: LoadedProject, env: str) -> Triggers:
    rb = project.config.effective_rollback(env)
    return Triggers(
        error_rate=float(rb.error_rate),
        min_requests=int(rb.min_requests),
        window=float(rb.window),
        max_restarts=int(rb.max_restarts),
        verification=float(rb.verification),
    )


def instance_template(project: LoadedProject, service: str) -> InstanceTemplate:
    """How instances start and stop: frozen, so a rollback starts the old version exactly as
    it ran then, whatever conveyor.yaml says today."""
    svc = project.config.service(service)
    health = svc.health
    return InstanceTemplate(
        command=svc.run if isinstance(svc.run, str) else tuple(svc.run),
        port_env=svc.port_env,
        readiness=_probe(health.readiness if health else None),
        liveness=_probe(health.liveness if health else None),
        stop_grace=float(svc.stop.grace_period),
        drain_timeout=float(svc.stop.drain_timeout),
        run_as=svc.run_as,
    )


def _probe(config: ProbeConfig | None) -> ProbeSpec | None:
    if config is None:
        return None
    return ProbeSpec(
        path=config.path,
        timeout=float(config.timeout),
        period=float(config.period),
        initial_delay=float(config.initial_delay),
        failure_threshold=config.failure_threshold,
        success_threshold=config.success_threshold,
    )


def check_run_as(project: LoadedProject, service: str, run_as: str | None, server: User) -> None:
    """Refuse a release whose instances could not start as the user its service names.

    Here, when the release is created, rather than when conveyor.yaml is parsed: the file is
    validated on laptops and CI machines that have no such user, and only the host that will
    start the processes can say. The error points at the line that set the user (the
    service's own ``run_as`` or the project's).
    """
    if run_as is None:
        return
    try:
        problem = switch_problem(lookup(run_as), server)
        hint = (
            "start the server as root (only root may start processes as another user), or "
            "remove run_as for this service"
        )
    except UnknownUser as exc:
        problem = exc.message
        hint = f"create it on the server's host ({CREATE_HINT}), or name an existing user"
    if problem is None:
        return
    field, line = _run_as_origin(project, service)
    raise ConfigError(
        [
            ConfigProblem(
                file=str(project.file),
                line=line,
                field=field,
                message=f"{service} cannot run as {run_as!r}: {problem}",
                hint=hint,
            )
        ]
    )


def _run_as_origin(project: LoadedProject, service: str) -> tuple[str, int | None]:
    """The dotted field that set a service's ``run_as``, and its line when it can be read."""
    try:
        origins = read_yaml(project.file.read_text(encoding="utf-8"), str(project.file)).origins()
    except (OSError, UnicodeDecodeError, ConveyorError):
        origins = {}
    for path in (("services", service, "run_as"), ("run_as",)):
        if path in origins:
            return ".".join(path), origins[path].line
    return f"services.{service}.run_as", None
