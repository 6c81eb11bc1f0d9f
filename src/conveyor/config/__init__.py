"""conveyor.yaml: the models, the loader that explains mistakes, and the JSON Schema."""

from conveyor.config.durations import parse_duration, parse_percentage
from conveyor.config.loader import LoadedProject, load_project, parse_config
from conveyor.config.pipeline import JobSpec, PipelineSpec
from conveyor.config.schema import (
    BlueGreenStrategy,
    BuildConfig,
    EnvironmentConfig,
    EnvironmentServiceConfig,
    HealthConfig,
    LivenessProbeConfig,
    ProbeConfig,
    ProjectConfig,
    RecreateStrategy,
    RollbackConfig,
    RollingStrategy,
    ServiceConfig,
    StopConfig,
    StrategyConfig,
    json_schema,
)
from conveyor.layout import find_config

__all__ = [
    "BlueGreenStrategy",
    "BuildConfig",
    "EnvironmentConfig",
    "EnvironmentServiceConfig",
    "HealthConfig",
    "JobSpec",
    "LivenessProbeConfig",
    "LoadedProject",
    "PipelineSpec",
    "ProbeConfig",
    "ProjectConfig",
    "RecreateStrategy",
    "RollbackConfig",
    "RollingStrategy",
    "ServiceConfig",
    "StopConfig",
    "StrategyConfig",
    "find_config",
    "json_schema",
    "load_project",
    "parse_config",
    "parse_duration",
    "parse_percentage",
]
