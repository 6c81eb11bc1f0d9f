"""An environment in conveyor.yaml: where it runs, how releases roll out there, what it
changes about each service, and what an artifact needs before it may be deployed there.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, WithJsonSchema, model_validator
from pydantic_core import InitErrorDetails

from conveyor.config.durations import PositiveDuration
from conveyor.config.fields import ConfigModel, ConfigValue, Port, Replicas, Slug
from conveyor.config.json_schema import embedded_schema
from conveyor.config.names import EnvVar
from conveyor.config.people import ApprovalConfig
from conveyor.config.retries import RetryConfig
from conveyor.config.rollout import (
    CanaryStrategy,
    HeaderRouteStepConfig,
    RollbackConfig,
    RollingStrategy,
    StrategyField,
)
from conveyor.config.suggest import choose_hint, invalid


class EnvironmentServiceConfig(ConfigModel):
    """What one environment changes about one service."""

    instances: Replicas | None = Field(None, description="Instances in this environment.")
    config: dict[EnvVar, ConfigValue] = Field(
        default_factory=dict, description="Config overlaid on the service's defaults."
    )
    port: Port | None = Field(
        None,
        description="Pin the service's stable address to this port on 127.0.0.1.",
        examples=[18080],
    )


def _requires_form(value: object) -> object:
    """``requires: [staging]`` is shorthand for ``requires: {environments: [staging]}``."""
    if isinstance(value, list):
        return {"environments": value}
    return value


class RequirementsConfig(ConfigModel):
    """What an artifact must already have before it may run in an environment (promotion).

    Checked at deploy time (``core.admission.unmet_requirements``); rollbacks are exempt so
    the way back is never locked. Gate results come from the pipeline, which records them on
    the artifact (``metadata.gates``: job name to result).
    """

    environments: list[Slug] = Field(
        default_factory=list,
        description="Environments where a release of the same artifact digest must have "
        "succeeded first.",
    )
    branches: list[str] = Field(
        default_factory=list,
        description="Git branches the artifact may be built from; a dirty tree is refused.",
    )
    gates: list[str] = Field(
        default_factory=list,
        description="Pipeline jobs that must have passed for this artifact.",
    )


def _requires_json_schema() -> dict[str, Any]:
    schema = embedded_schema(RequirementsConfig)
    names = {"type": "array", "items": {"type": "string"}}
    return {"anyOf": [names, schema], "description": RequirementsConfig.__doc__ or ""}


class EnvironmentConfig(ConfigModel):
    """A named place a release runs in; environments are promoted in the order declared."""

    target: Literal["local"] = Field("local", description="Where instances run.")
    router: Literal["builtin", "haproxy"] = Field(
        "builtin",
        description="What splits traffic: the built-in router, or HAProxy (from its package) "
        "driven through its runtime API.",
    )
    strategy: StrategyField = Field(default_factory=RollingStrategy)
    retries: RetryConfig = Field(
        default_factory=RetryConfig,
        description="A canary's failed GET/HEAD/OPTIONS requests are retried once on the "
        "stable version (built-in router; HAProxy does what it can, see docs/router.md).",
    )
    progress_deadline: PositiveDuration = Field(
        60.0, description="A rollout step that makes no progress this long is rolled back."
    )
    services: dict[Slug, EnvironmentServiceConfig] = Field(
        default_factory=dict, description="Per-service overrides, keyed by service name."
    )
    rollback: RollbackConfig | None = Field(
        None, description="Overrides of the project's rollback triggers, field by field."
    )
    requires: Annotated[
        RequirementsConfig,
        BeforeValidator(_requires_form),
        WithJsonSchema(_requires_json_schema()),
    ] = Field(
        default_factory=RequirementsConfig,
        description="What an artifact needs before it may be deployed here: successful "
        "releases elsewhere, branches, passed gates. A list is shorthand for environments.",
    )
    allow_set: list[EnvVar] = Field(
        default_factory=list,
        description="Protected variables (PATH, LD_*, PYTHON*, HOME, ...; see docs/config.md) "
        "that `--set` and deploy jobs may nevertheless set for a release here. conveyor.yaml "
        "itself may always set them.",
        examples=[["PYTHONPATH"]],
    )
    approval: ApprovalConfig | None = Field(
        None,
        description="People who must approve a release before it runs here (rollbacks never "
        "wait): required, from, prevent_self_review, wait_timer, expires.",
    )
    when_budget_exhausted: Literal["freeze", "warn"] = Field(
        "warn",
        description="freeze: while a service's SLO error budget here is spent, its releases "
        "are refused except rollbacks, fixes (deploy --fix) and the emergency path.",
    )
    rollback_on_page_burn: bool = Field(
        False,
        description="A page-level SLO burn alert of the service during its rollout here rolls "
        "the rollout back.",
    )

    @model_validator(mode="after")
    def _min_ready_within_deadline(self) -> EnvironmentConfig:
        # A new instance that became ready restarts the progress clock; if it must then stay
        # ready longer than the deadline, every rolling release would roll back.
        strategy = self.strategy
        if isinstance(strategy, RollingStrategy) and strategy.min_ready >= self.progress_deadline:
            raise invalid(
                f"strategy.rolling.min_ready ({strategy.min_ready:g}s) must be shorter than "
                f"progress_deadline ({self.progress_deadline:g}s): no rolling release could "
                "make progress in time",
                f"lower min_ready, or raise progress_deadline above {strategy.min_ready:g}s",
            )
        return self

    @model_validator(mode="after")
    def _router_can_route(self) -> EnvironmentConfig:
        # HAProxy reads a header named in its configuration (traffic/haproxy/headers.py):
        # the name must be writable there, and an empty value cannot be a map key.
        strategy = self.strategy
        if self.router != "haproxy" or not isinstance(strategy, CanaryStrategy):
            return self
        for step in strategy.steps:
            if not isinstance(step, HeaderRouteStepConfig):
                continue
            match = step.set_header_route
            if not re.fullmatch(r"[A-Za-z0-9_.-]+", match.header) or not match.value:
                raise invalid(
                    f"the haproxy router cannot route by header {match.header!r} = "
                    f"{match.value!r}: it needs a header name of letters, digits, '-', '_' "
                    "or '.' and a non-empty value",
                    "rename the header (X-Canary is the usual one), or use router: builtin",
                )
        return self


def reference_errors(
    services: Collection[str] | None, overrides: Iterable[tuple[str, str, int | None]]
) -> list[InitErrorDetails]:
    """Overrides must name declared services, and pinned ports must not collide.

    ``overrides`` is (environment, service, pinned port) for every per-environment service
    block. Each error keeps its own location under ``environments`` (and so its own line in
    the file). The loader also calls this on the raw document, so these problems are
    reported together with field errors that stop pydantic from reaching this check.
    """
    problems: list[InitErrorDetails] = []
    pinned: dict[int, tuple[str, str]] = {}
    for env_name, name, port in overrides:
        if services is not None and name not in services:
            problems.append(
                InitErrorDetails(
                    type=invalid(
                        f"environment '{env_name}' overrides unknown service '{name}'",
                        choose_hint(name, services, "services"),
                    ),
                    loc=(env_name, "services", name),
                    input=name,
                )
            )
        if port is None:
            continue
        if port in pinned:
            other_service, other_env = pinned[port]
            problems.append(
                InitErrorDetails(
                    type=invalid(
                        f"port {port} is already pinned by service '{other_service}' "
                        f"in environment '{other_env}'",
                        "every environment runs on 127.0.0.1: give each a distinct port",
                    ),
                    loc=(env_name, "services", name, "port"),
                    input=port,
                )
            )
        else:
            pinned[port] = (name, env_name)
    return problems
