"""The shape of conveyor.yaml, as frozen pydantic models, and the questions asked of it.

The models are the single source of truth for three things: validation (with messages a
user can act on), the JSON Schema editors use for completion (every field has a
description), and the helpers the controller calls to resolve per-environment values.
Those helpers live on ``ProjectConfig`` and are pure: an environment's overrides are
resolved here, once, instead of in each caller.

Strategies are a discriminated union on ``kind``, but nobody wants to type ``kind:`` in a
config file, so a before-validator accepts the forms people write (``strategy: recreate``
or ``strategy: {rolling: {max_surge: 1}}``) and the JSON Schema describes those forms.
The canonical ``{kind: ...}`` mapping is accepted too, so a dumped model validates again.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from conveyor.config.analysis import AnalysisTemplateConfig
from conveyor.config.durations import (
    Count,
    Duration,
    IntOrPercent,
    Percentage,
    PositiveDuration,
    reject_bool,
    resolve_int_or_percent,
)
from conveyor.config.json_schema import embedded_schema, model_schema
from conveyor.config.suggest import choose_hint, describe, invalid
from conveyor.errors import NotFound

SLUG_PATTERN = r"^[a-z0-9][a-z0-9-]*$"
ENV_VAR_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
RELATIVE_PATH_PATTERN = r"^(?![/~])(?![\s\S]*(?:^|/)\.\.(?:/|$))[\s\S]*\S"
"""What ``_relative_path`` accepts: not blank, no leading '/' or '~', no '..' segment."""


def _slug(value: str) -> str:
    if not re.fullmatch(SLUG_PATTERN, value):
        raise invalid(
            f"{describe(value)} is not a valid name",
            "use lowercase letters, digits and '-', starting with a letter or digit",
        )
    return value


def _env_var(value: str) -> str:
    if not re.fullmatch(ENV_VAR_PATTERN, value):
        raise invalid(
            f"{describe(value)} is not a valid environment variable name",
            "use letters, digits and '_', not starting with a digit (e.g. GREETING)",
        )
    return value


def _relative_path(value: str) -> str:
    path = PurePosixPath(value)
    if not value.strip():
        raise invalid("a path cannot be empty", "use '.' for the service directory itself")
    if path.is_absolute() or value.startswith("~"):
        raise invalid(
            f"path {describe(value)} must be relative",
            "paths are relative to the service directory, e.g. app/ or dist/server",
        )
    if ".." in path.parts:
        raise invalid(
            f"path {describe(value)} must not leave its directory ('..')",
            "keep build inputs and outputs inside the service directory",
        )
    return value


def _http_path(value: str) -> str:
    if not value.startswith("/") or any(c.isspace() for c in value):
        raise invalid(
            f"{describe(value)} is not an HTTP path", "start it with '/', e.g. /health/ready"
        )
    return value


def _command(value: object) -> str | list[str]:
    hint = (
        'write a shell command such as "python3 app.py" or an argv list such as [python3, app.py]'
    )
    if isinstance(value, str):
        if value.strip():
            return value
        raise invalid("the command is empty", hint)
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return list(value)
    raise invalid(
        f"expected a command (a string or a list of strings), got {describe(value)}", hint
    )


def _scalar(value: object) -> str | int | float | bool:
    if isinstance(value, str | int | float | bool):
        return value
    raise invalid(
        f"config values must be a string, number or true/false, got {describe(value)}",
        'quote the value to pass it as text, e.g. KEY: "" for an empty value',
    )


Slug = Annotated[
    str,
    AfterValidator(_slug),
    WithJsonSchema({"type": "string", "pattern": SLUG_PATTERN}),
]
EnvVar = Annotated[
    str,
    AfterValidator(_env_var),
    WithJsonSchema({"type": "string", "pattern": ENV_VAR_PATTERN}),
]
RelativePath = Annotated[
    str,
    AfterValidator(_relative_path),
    WithJsonSchema({"type": "string", "pattern": RELATIVE_PATH_PATTERN}),
]
HttpPath = Annotated[
    str, AfterValidator(_http_path), WithJsonSchema({"type": "string", "pattern": "^/"})
]
Command = Annotated[
    str | list[str],
    BeforeValidator(_command),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "minLength": 1},
                {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1},
            ]
        }
    ),
]
ConfigValue = Annotated[
    str | int | float | bool,
    BeforeValidator(_scalar),
    WithJsonSchema({"type": ["string", "number", "boolean"]}),
]
Port = Annotated[int, Field(ge=1, le=65535), BeforeValidator(reject_bool)]
Replicas = Annotated[int, Field(ge=1), BeforeValidator(reject_bool)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RollbackConfig(_Model):
    """When a new version is judged bad and users are returned to the previous one."""

    error_rate: Percentage = Field(
        0.05,
        description="Roll back when the share of 5xx answers of the new version, as seen by the "
        "router over `window`, exceeds this. '5%' or 0.05.",
    )
    min_requests: Count = Field(
        20, ge=1, description="Fewer requests than this in the window are not judged."
    )
    window: PositiveDuration = Field(10.0, description="Sliding window for the error rate.")
    max_restarts: Count = Field(
        2,
        ge=1,
        description="Crashes of a new instance during a rollout that count as a crash loop.",
    )
    verification: Duration = Field(
        15.0,
        description="After all traffic is on the new version, keep watching it this long.",
    )


class BuildConfig(_Model):
    """How an artifact is produced; it runs once per commit, never per environment."""

    run: Command = Field(
        description="Build command, run in the service path: a string (via sh -c) or an argv list."
    )
    outputs: list[RelativePath] = Field(
        min_length=1,
        description="Files and directories, relative to the service path, that form the artifact.",
    )
    timeout: PositiveDuration = Field(600.0, description="The build fails after this long.")


class ProbeConfig(_Model):
    """An HTTP GET probe with Kubernetes semantics: thresholds count consecutive results."""

    path: HttpPath = Field(
        description="HTTP path probed on the instance's port, e.g. /health/ready."
    )
    timeout: PositiveDuration = Field(2.0, description="A probe slower than this fails.")
    period: PositiveDuration = Field(1.0, description="Time between probes.")
    initial_delay: Duration = Field(0.0, description="Wait this long after start before probing.")
    failure_threshold: Count = Field(
        3, ge=1, description="Consecutive failures that mark the instance not ready / dead."
    )
    success_threshold: Count = Field(
        1, ge=1, description="Consecutive successes that mark the instance ready again."
    )


class LivenessProbeConfig(ProbeConfig):
    """A liveness probe: probed less often, since it only has to catch a hung process."""

    period: PositiveDuration = Field(5.0, description="Time between probes.")


class HealthConfig(_Model):
    readiness: ProbeConfig | None = Field(
        None,
        description="Deep readiness probe: an instance receives traffic only while it passes.",
    )
    liveness: LivenessProbeConfig | None = Field(
        None, description="Liveness probe: an instance that fails it is restarted."
    )


class StopConfig(_Model):
    grace_period: Duration = Field(
        10.0, description="Time between SIGTERM and SIGKILL when an instance stops."
    )
    drain_timeout: Duration = Field(
        30.0,
        description="How long in-flight requests may finish after an instance leaves the router.",
    )


class ServiceConfig(_Model):
    """One deployable unit: how to build it, how to run it, how to probe its health."""

    path: RelativePath = Field(
        ".", description="Directory, relative to conveyor.yaml, the build runs in."
    )
    build: BuildConfig = Field(description="How to build the artifact.")
    run: Command = Field(
        description="Command started in the unpacked artifact: a string (via sh -c) or argv list."
    )
    port_env: EnvVar = Field("PORT", description="Environment variable the port is passed in.")
    instances: Count = Field(1, ge=1, description="Number of instances per environment.")
    health: HealthConfig | None = Field(None, description="Readiness and liveness probes.")
    config: dict[EnvVar, ConfigValue] = Field(
        default_factory=dict,
        description="Default configuration, injected as environment variables at deploy time.",
    )
    stop: StopConfig = Field(default_factory=StopConfig, description="How instances stop.")


class RecreateStrategy(_Model):
    """Stop every old instance, then start the new ones: downtime, but never two versions."""

    kind: Literal["recreate"] = "recreate"


class RollingStrategy(_Model):
    """Replace instances a few at a time, keeping capacity within the surge/unavailable bounds."""

    kind: Literal["rolling"] = "rolling"
    max_surge: IntOrPercent = Field(
        1, description="Extra instances allowed above the desired count (count or '25%')."
    )
    max_unavailable: IntOrPercent = Field(
        0, description="Instances allowed below the desired count (count or '25%')."
    )

    @model_validator(mode="after")
    def _can_progress(self) -> RollingStrategy:
        if self.max_surge in (0, "0%") and self.max_unavailable in (0, "0%"):
            raise invalid(
                "max_surge and max_unavailable cannot both be 0: the rollout could never progress",
                "set max_surge: 1 to start a new instance before stopping an old one",
            )
        return self


class BlueGreenStrategy(_Model):
    """Start a full new set beside the old one, then switch all traffic at once."""

    kind: Literal["blue_green"] = "blue_green"
    scale_down_delay: Duration = Field(
        30.0, description="Keep the old set running this long after the switch, for rollback."
    )
    auto_promote: bool = Field(
        True, description="Switch traffic as soon as the new set is ready, without approval."
    )


class PauseConfig(_Model):
    duration: Duration | None = Field(
        None, description="How long to pause; omit (pause: {}) to wait for `conveyor promote`."
    )


class HeaderMatchConfig(_Model):
    header: str = Field(description="Request header name, e.g. X-Canary.")
    value: str = Field(description="Requests whose header equals this go to the canary.")


class SetWeightStepConfig(_Model):
    set_weight: int = Field(
        ge=0, le=100, description="Percent of users on the canary.", examples=[20]
    )


class PauseStepConfig(_Model):
    pause: Duration | PauseConfig = Field(
        description="A duration (30s), or {} to wait for a human (`conveyor promote`)."
    )


class AnalysisStepConfig(_Model):
    analysis: str = Field(description="Name of an `analysis:` template; blocks until judged.")


class HeaderRouteStepConfig(_Model):
    set_header_route: HeaderMatchConfig = Field(
        description="Send requests with this header to the canary whatever the weight."
    )


_STEP_KEYS = {
    "set_weight": "set_weight",
    "pause": "pause",
    "analysis": "analysis",
    "set_header_route": "set_header_route",
}


def _step_tag(value: object) -> str | None:
    if isinstance(value, dict) and len(value) == 1:
        key = next(iter(value))
        return _STEP_KEYS.get(str(key))
    if isinstance(value, BaseModel):
        return next(iter(type(value).model_fields))
    return None


CanaryStep = Annotated[
    Annotated[SetWeightStepConfig, Tag("set_weight")]
    | Annotated[PauseStepConfig, Tag("pause")]
    | Annotated[AnalysisStepConfig, Tag("analysis")]
    | Annotated[HeaderRouteStepConfig, Tag("set_header_route")],
    Discriminator(
        _step_tag,
        custom_error_type="canary_step",
        custom_error_message="a canary step is one of set_weight: N, pause: 30s (or {}), "
        "analysis: NAME, set_header_route: {header: H, value: V}",
    ),
]


class CanaryStrategy(_Model):
    """Expose the new version step by step (weights, pauses, analysis) and judge it as it goes."""

    kind: Literal["canary"] = "canary"
    steps: list[CanaryStep] = Field(min_length=1, description="The steps, in order.")
    analysis: str | None = Field(
        None, description="An `analysis:` template run in the background for the whole rollout."
    )
    scale_down_delay: Duration = Field(
        30.0, description="Keep the old version running this long after promotion, for rollback."
    )

    def analysis_names(self) -> list[str]:
        names = [s.analysis for s in self.steps if isinstance(s, AnalysisStepConfig)]
        return names + ([self.analysis] if self.analysis else [])


AnyStrategy = RecreateStrategy | RollingStrategy | BlueGreenStrategy | CanaryStrategy

STRATEGIES: dict[str, type[AnyStrategy]] = {
    "recreate": RecreateStrategy,
    "rolling": RollingStrategy,
    "blue_green": BlueGreenStrategy,
    "canary": CanaryStrategy,
}

StrategyConfig = Annotated[AnyStrategy, Field(discriminator="kind")]


def _strategy_form(value: object) -> object:
    """``"recreate"`` and ``{rolling: {...}}`` -> ``{"kind": ..., **params}``."""
    if isinstance(value, str):
        if value not in STRATEGIES:
            raise invalid(
                f"unknown strategy '{value}'", choose_hint(value, STRATEGIES, "strategies")
            )
        return {"kind": value}
    if not isinstance(value, dict) or "kind" in value:
        return value
    if len(value) != 1:
        raise invalid(
            f"a strategy mapping needs exactly one key, the strategy name; got {len(value)}",
            "write e.g. strategy: {rolling: {max_surge: 1}} or strategy: recreate",
        )
    [(name, params)] = value.items()
    if name not in STRATEGIES:
        raise invalid(
            f"unknown strategy '{name}'", choose_hint(str(name), STRATEGIES, "strategies")
        )
    if params is None:
        return {"kind": name}
    if not isinstance(params, dict):
        raise invalid(
            f"the {name} parameters must be a mapping, got {describe(params)}",
            f"write e.g. strategy: {{{name}: {{}}}} or strategy: {name}",
        )
    return {**params, "kind": name}


def _strategy_json_schema() -> dict[str, Any]:
    params: dict[str, Any] = {}
    for name, model in STRATEGIES.items():
        schema = embedded_schema(model)
        schema["properties"].pop("kind")
        params[name] = {"anyOf": [schema, {"type": "null"}]}
    return {
        "description": "How a new version replaces the old one: a name (recreate, rolling, "
        "blue_green) or a one-key mapping of the name to its parameters.",
        "default": "rolling",
        "anyOf": [
            # canary needs its steps, so it has no bare-name form
            {"type": "string", "enum": [n for n in STRATEGIES if n != "canary"]},
            {
                "type": "object",
                "properties": params,
                "additionalProperties": False,
                "minProperties": 1,
                "maxProperties": 1,
            },
        ],
    }


class EnvironmentServiceConfig(_Model):
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


class RequirementsConfig(_Model):
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


class EnvironmentConfig(_Model):
    """A named place a release runs in; environments are promoted in the order declared."""

    target: Literal["local"] = Field("local", description="Where instances run.")
    router: Literal["builtin", "haproxy"] = Field(
        "builtin",
        description="What splits traffic: the built-in router, or HAProxy (from its package) "
        "driven through its runtime API.",
    )
    strategy: Annotated[
        StrategyConfig, BeforeValidator(_strategy_form), WithJsonSchema(_strategy_json_schema())
    ] = Field(default_factory=RollingStrategy)
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


class NotifyConfig(_Model):
    """Where to tell people when Conveyor needs them or acted on its own."""

    webhook: str = Field(
        pattern=r"^https?://",
        description="URL that receives a JSON POST per notification",
        examples=["http://127.0.0.1:9000/hooks/conveyor"],
    )
    events: list[str] = Field(
        default_factory=lambda: [
            "analysis.inconclusive",
            "rollout.paused",
            "release.rolled_back",
            "release.failed",
            "verification.failed",
        ],
        description="Ledger event kinds to send.",
    )
    secret_env: str | None = Field(
        None,
        pattern=ENV_VAR_PATTERN,
        description="Environment variable holding the HMAC secret that signs each body "
        "(X-Conveyor-Signature: sha256=...). The secret itself never goes in this file.",
    )


class ProjectConfig(_Model):
    """The root of conveyor.yaml."""

    project: Slug = Field(description="Project name.")
    rollback: RollbackConfig = Field(
        default_factory=RollbackConfig,
        description="When a new version is rolled back automatically, in every environment.",
    )
    notify: list[NotifyConfig] = Field(
        default_factory=list, description="Notifications (webhooks) for events humans act on."
    )
    analysis: dict[str, AnalysisTemplateConfig] = Field(
        default_factory=dict,
        description="Analysis templates canary steps name: metrics, providers, conditions.",
    )
    services: dict[Slug, ServiceConfig] = Field(
        min_length=1, description="The deployable services, keyed by name."
    )
    environments: dict[Slug, EnvironmentConfig] = Field(
        min_length=1,
        description="Environments in promotion order, e.g. dev, staging, production.",
    )
    pipeline: dict[str, Any] | None = Field(
        None,
        description="The service's pipeline: jobs with run, needs, if, matrix, cache, ... and "
        "optionally 'extends: PATH' to a shared template. Validated by conveyor.pipeline "
        "(see docs/pipelines.md); only its shape is checked here, as config sits below it.",
    )

    @field_validator("environments", mode="before")
    @classmethod
    def _empty_environment(cls, value: object) -> object:
        """``dev:`` with nothing under it is an environment with every default."""
        if isinstance(value, dict):
            return {name: {} if env is None else env for name, env in value.items()}
        return value

    @field_validator("environments")
    @classmethod
    def _references(
        cls, environments: dict[str, EnvironmentConfig], info: ValidationInfo
    ) -> dict[str, EnvironmentConfig]:
        services = info.data.get("services")
        overrides = [
            (env_name, name, override.port)
            for env_name, env in environments.items()
            for name, override in env.services.items()
        ]
        problems = reference_errors(services, overrides)
        templates = info.data.get("analysis")
        if templates is not None:
            for env_name, env in environments.items():
                if not isinstance(env.strategy, CanaryStrategy):
                    continue
                for name in env.strategy.analysis_names():
                    if name not in templates:
                        problems.append(
                            InitErrorDetails(
                                type=PydanticCustomError(
                                    "unknown_template",
                                    "unknown analysis template '{name}'; {hint}",
                                    {
                                        "name": name,
                                        "hint": choose_hint(name, templates, "analysis templates")
                                        or "declare it under analysis:",
                                    },
                                ),
                                loc=(env_name, "strategy", "canary"),
                                input=name,
                            )
                        )
        for env_name, env in environments.items():
            for index, required in enumerate(env.requires.environments):
                if required not in environments or required == env_name:
                    problems.append(
                        InitErrorDetails(
                            type=invalid(
                                f"environment '{env_name}' requires "
                                + (
                                    "itself"
                                    if required == env_name
                                    else f"unknown environment '{required}'"
                                ),
                                choose_hint(
                                    required,
                                    [n for n in environments if n != env_name],
                                    "environments",
                                ),
                            ),
                            loc=(env_name, "requires", "environments", index),
                            input=required,
                        )
                    )
        if problems:
            raise ValidationError.from_exception_data("environments", problems)
        return environments

    # --- questions the controller asks -------------------------------------------------

    def service(self, name: str) -> ServiceConfig:
        try:
            return self.services[name]
        except KeyError:
            raise NotFound(
                f"unknown service '{name}' in project '{self.project}'",
                choose_hint(name, self.services, "services"),
            ) from None

    def environment(self, name: str) -> EnvironmentConfig:
        try:
            return self.environments[name]
        except KeyError:
            raise NotFound(
                f"unknown environment '{name}' in project '{self.project}'",
                choose_hint(name, self.environments, "environments"),
            ) from None

    def _override(self, service: str, env: str) -> EnvironmentServiceConfig | None:
        self.service(service)
        return self.environment(env).services.get(service)

    def effective_rollback(self, env: str) -> RollbackConfig:
        """The project's triggers overlaid by the fields the environment actually set.

        ``model_fields_set`` matters: an environment that writes only ``error_rate: 2%`` must
        not silently reset ``window`` to the default when the project changed it.
        """
        override = self.environment(env).rollback
        if override is None:
            return self.rollback
        changes = {name: getattr(override, name) for name in override.model_fields_set}
        return self.rollback.model_copy(update=changes)

    def effective_instances(self, service: str, env: str) -> int:
        override = self._override(service, env)
        if override is not None and override.instances is not None:
            return override.instances
        return self.service(service).instances

    def effective_config(self, service: str, env: str) -> dict[str, str]:
        """Environment variables as they reach the process: strings, YAML-style booleans."""
        override = self._override(service, env)
        merged = {**self.service(service).config, **(override.config if override else {})}
        return {key: _env_text(value) for key, value in merged.items()}

    def pinned_port(self, service: str, env: str) -> int | None:
        override = self._override(service, env)
        return override.port if override is not None else None

    def rolling_counts(self, strategy: AnyStrategy, desired: int) -> tuple[int, int]:
        """(surge, unavailable) as absolute instance counts for ``desired`` instances.

        Percentages resolve like Kubernetes: surge rounds up, unavailable rounds down, and if
        both come to 0 surge becomes 1 so the rollout can move. The other strategies answer
        too, as the bounds they imply: recreate may drop every instance, blue-green doubles.
        """
        if isinstance(strategy, RecreateStrategy):
            return 0, desired
        if isinstance(strategy, BlueGreenStrategy | CanaryStrategy):
            return desired, 0
        surge = resolve_int_or_percent(strategy.max_surge, desired, round_up=True)
        unavailable = resolve_int_or_percent(strategy.max_unavailable, desired, round_up=False)
        unavailable = min(unavailable, desired)
        if surge == 0 and unavailable == 0:
            surge = 1
        return surge, unavailable


def _env_text(value: str | int | float | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def json_schema() -> dict[str, Any]:
    """JSON Schema for conveyor.yaml, for editors (e.g. yaml-language-server) and docs."""
    schema = model_schema(ProjectConfig)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **schema,
        "title": "conveyor.yaml",
    }
