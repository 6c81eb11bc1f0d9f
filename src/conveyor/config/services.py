"""A service in conveyor.yaml: how its artifact is built, how it runs, probed and stopped."""

from __future__ import annotations

from pydantic import Field

from conveyor.config.durations import Count, Duration, PositiveDuration
from conveyor.config.fields import (
    Command,
    ConfigModel,
    ConfigValue,
    HttpPath,
    RelativePath,
)
from conveyor.config.migrations import MigrateConfig
from conveyor.config.names import EnvVar, RunAs
from conveyor.config.slos import SloConfig


class BuildConfig(ConfigModel):
    """How an artifact is produced; it runs once per commit, never per environment."""

    run: Command = Field(
        description="Build command, run in the service path: a string (via sh -c) or an argv list."
    )
    outputs: list[RelativePath] = Field(
        min_length=1,
        description="Files and directories, relative to the service path, that form the artifact.",
    )
    timeout: PositiveDuration = Field(600.0, description="The build fails after this long.")
    inputs: list[RelativePath] | None = Field(
        None,
        description="Globs, relative to the service path, of the files the build may see "
        "(e.g. 'src/**', 'pyproject.toml'); '**' spans directories, a directory takes "
        "everything below it. Left out: every file git does not ignore. See docs/builds.md.",
    )


class ProbeConfig(ConfigModel):
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


class HealthConfig(ConfigModel):
    readiness: ProbeConfig | None = Field(
        None,
        description="Deep readiness probe: an instance receives traffic only while it passes.",
    )
    liveness: LivenessProbeConfig | None = Field(
        None, description="Liveness probe: an instance that fails it is restarted."
    )


class StopConfig(ConfigModel):
    grace_period: Duration = Field(
        10.0, description="Time between SIGTERM and SIGKILL when an instance stops."
    )
    drain_timeout: Duration = Field(
        30.0,
        description="How long in-flight requests may finish after an instance leaves the router.",
    )


class ServiceConfig(ConfigModel):
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
    run_as: RunAs | None = Field(
        None,
        description="The unprivileged user (`user` or `user:group`) this service's instances "
        "and builds run as; it must exist where they start, and the server must run as root. "
        "Left out: the project's `run_as`, if any (`null` keeps the server's user).",
        examples=["conveyor-run"],
    )
    migrate: MigrateConfig | None = Field(
        None,
        description="Schema migrations run once per release, before new instances start, "
        "with lock and statement timeouts (docs/migrations.md).",
    )
    slos: list[SloConfig] = Field(
        default_factory=list,
        max_length=20,
        description="Service level objectives, with multiwindow burn-rate alerts evaluated by "
        "Conveyor and exportable as Prometheus rules (docs/insight.md).",
    )
