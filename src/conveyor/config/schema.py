"""The shape of conveyor.yaml, as frozen pydantic models, and the questions asked of it.

The models are the single source of truth for three things: validation (with messages a
user can act on), the JSON Schema editors use for completion (every field has a
description), and the helpers the controller calls to resolve per-environment values.
Those helpers live on ``ProjectConfig`` and are pure: an environment's overrides are
resolved here, once, instead of in each caller.

``ProjectConfig``, the root, lives here with the checks that span its sections (overrides
name declared services, canary steps declared templates, requirements declared
environments). The sections live one idea per module, and every model is importable from
here as it always was (``__all__``):

- ``fields``: the frozen base and the shared field types (names, paths, commands, ports,
  config values and secret references);
- ``services``: a service's build, run command, probes and stop timings;
- ``rollout``: strategies, canary steps and rollback triggers;
- ``environments``: an environment, its per-service overrides and its requirements;
- ``settings``: notifications, the server, the build queue.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from conveyor.config.analysis import AnalysisTemplateConfig
from conveyor.config.durations import resolve_int_or_percent
from conveyor.config.environments import (
    EnvironmentConfig,
    EnvironmentServiceConfig,
    RequirementsConfig,
    reference_errors,
)
from conveyor.config.fields import (
    RELATIVE_PATH_PATTERN,
    SLUG_PATTERN,
    Command,
    ConfigModel,
    ConfigScalar,
    ConfigValue,
    HttpPath,
    Port,
    RelativePath,
    Replicas,
    SecretConfig,
    SecretSourceConfig,
    Slug,
)
from conveyor.config.flags import FLAG_DESCRIPTION, SEGMENT_DESCRIPTION, parse_flags
from conveyor.config.json_schema import model_schema
from conveyor.config.names import RunAs
from conveyor.config.people import AccessConfig
from conveyor.config.pipeline import PipelineSpec
from conveyor.config.rollout import (
    STRATEGIES,
    AnalysisStepConfig,
    AnyStrategy,
    BlueGreenStrategy,
    CanaryStep,
    CanaryStrategy,
    HeaderMatchConfig,
    HeaderRouteStepConfig,
    PauseConfig,
    PauseStepConfig,
    RecreateStrategy,
    RollbackConfig,
    RollingStrategy,
    SetWeightStepConfig,
    StrategyConfig,
    StrategyField,
)
from conveyor.config.services import (
    BuildConfig,
    HealthConfig,
    LivenessProbeConfig,
    ProbeConfig,
    ServiceConfig,
    StopConfig,
)
from conveyor.config.settings import BuildsConfig, MarkersConfig, NotifyConfig, ServerConfig
from conveyor.config.suggest import choose_hint, invalid
from conveyor.config.windows import Windows
from conveyor.core.flags.model import Flag, Segment
from conveyor.core.model import SecretRef
from conveyor.errors import NotFound
from conveyor.run_as import RUN_AS_PATTERN

__all__ = [
    "RELATIVE_PATH_PATTERN",
    "SLUG_PATTERN",
    "STRATEGIES",
    "AnalysisStepConfig",
    "AnyStrategy",
    "BlueGreenStrategy",
    "BuildConfig",
    "BuildsConfig",
    "CanaryStep",
    "CanaryStrategy",
    "Command",
    "ConfigModel",
    "ConfigScalar",
    "ConfigValue",
    "EnvironmentConfig",
    "EnvironmentServiceConfig",
    "HeaderMatchConfig",
    "HeaderRouteStepConfig",
    "HealthConfig",
    "HttpPath",
    "LivenessProbeConfig",
    "NotifyConfig",
    "PauseConfig",
    "PauseStepConfig",
    "Port",
    "ProbeConfig",
    "ProjectConfig",
    "RecreateStrategy",
    "RelativePath",
    "Replicas",
    "RequirementsConfig",
    "RollbackConfig",
    "RollingStrategy",
    "SecretConfig",
    "SecretSourceConfig",
    "ServerConfig",
    "ServiceConfig",
    "SetWeightStepConfig",
    "Slug",
    "StopConfig",
    "StrategyConfig",
    "StrategyField",
    "json_schema",
    "reference_errors",
]


class ProjectConfig(ConfigModel):
    """The root of conveyor.yaml."""

    project: Slug = Field(description="Project name.")
    rollback: RollbackConfig = Field(
        default_factory=RollbackConfig,
        description="When a new version is rolled back automatically, in every environment.",
    )
    notify: list[NotifyConfig] = Field(
        default_factory=list, description="Notifications (webhooks) for events humans act on."
    )
    markers: MarkersConfig = Field(
        default_factory=MarkersConfig,
        description="Deployment markers beyond /metrics: Grafana annotations.",
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
    windows: Windows = Field(
        default_factory=list,
        description="Deploy windows: when deploys may (allow) or may not (deny) start, per "
        "environment and service; rollbacks are never held back (see docs/config.md).",
    )
    builds: BuildsConfig = Field(
        default_factory=BuildsConfig,
        description="How many builds run at once on this host (the build queue).",
    )
    server: ServerConfig = Field(
        default_factory=ServerConfig,
        description="Who the server answers (public metrics, extra host names) and how many "
        "processes its built-in router runs.",
    )
    flags: dict[str, dict[str, Any]] = Field(default_factory=dict, description=FLAG_DESCRIPTION)
    segments: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description=SEGMENT_DESCRIPTION
    )
    access: AccessConfig | None = Field(
        None,
        description="Groups of identities and their roles per environment; in force only once "
        "an admin applies it (`conveyor access apply`).",
    )
    pipeline: PipelineSpec | None = Field(
        None,
        description="The service's pipeline: jobs with run, needs, if, matrix, cache, ... and "
        "optionally 'extends: PATH' to a shared template (see docs/pipelines.md). Loaded "
        "with its templates merged in.",
    )
    run_as: RunAs | None = Field(
        None,
        description="The unprivileged user (`user` or `user:group`) that instances, builds "
        "and pipeline jobs run as, unless a service or the pipeline names its own. Without "
        "it, they run as the user running Conveyor: as root, they could read .conveyor/ "
        "(see SECURITY.md).",
        examples=["conveyor-run"],
    )

    @model_validator(mode="before")
    @classmethod
    def _run_as_default(cls, data: object) -> object:
        """The project's ``run_as`` becomes each service's and the pipeline's where they
        leave the key out (an explicit ``null`` keeps theirs unset): so a service config
        and a pipeline spec carry the user they run as, wherever they are handed on."""
        run_as = data.get("run_as") if isinstance(data, dict) else None
        if not isinstance(run_as, str) or not re.fullmatch(RUN_AS_PATTERN, run_as):
            return data  # nothing to hand down; a misspelt value is reported once, up here
        assert isinstance(data, dict)
        data = dict(data)
        services = data.get("services")
        if isinstance(services, dict):
            data["services"] = {
                name: {"run_as": run_as, **svc} if isinstance(svc, dict) else svc
                for name, svc in services.items()
            }
        pipeline = data.get("pipeline")
        if isinstance(pipeline, dict):
            data["pipeline"] = {"run_as": run_as, **pipeline}
        return data

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

    def flag_set(self) -> tuple[dict[str, Flag], dict[str, Segment]]:
        """The flags and segments as the core's records (the loader checked them)."""
        return parse_flags(self.flags, self.segments)

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

    def _merged_config(self, service: str, env: str) -> dict[str, ConfigScalar | SecretConfig]:
        override = self._override(service, env)
        return {**self.service(service).config, **(override.config if override else {})}

    def effective_config(self, service: str, env: str) -> dict[str, str]:
        """Environment variables as they reach the process: strings, YAML-style booleans.

        Secret keys are not here but in ``effective_secrets``: an environment may turn a
        service's plain default into a secret or the other way round, key by key.
        """
        return {
            key: _env_text(value)
            for key, value in self._merged_config(service, env).items()
            if not isinstance(value, SecretConfig)
        }

    def effective_secrets(self, service: str, env: str) -> dict[str, SecretRef]:
        """The config keys whose value is a secret, by reference (read when an instance starts)."""
        return {
            key: value.secret.reference()
            for key, value in self._merged_config(service, env).items()
            if isinstance(value, SecretConfig)
        }

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
