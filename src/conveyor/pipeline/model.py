"""The ``pipeline:`` block of conveyor.yaml, as pydantic models.

These models only describe what the user wrote; they do no I/O and resolve nothing. Matrix
expansion, ordering and conditions live in ``plan.py``; secrets are resolved by the runner at
the last moment so that no model, plan or result ever holds a secret value.

Shape::

    pipeline:
      vars: {python: "3.11"}
      fail_fast: true
      max_parallel: 4            # default: the CPU count
      jobs:
        build:
          run: make build        # a string runs under ``sh -c``; a list is exec'd as is
        test:
          needs: [build]
          if: "branch == 'main' and needs.build.outputs.version != ''"
          matrix: {python: ["3.11", "3.12"]}
          timeout: 10m
          retries: 2             # only for infrastructure failures, see runner.py
          env: {VERSION: "{{ needs.build.outputs.version }}"}
          secrets: {TOKEN: {env: CI_TOKEN}, KEY: {file: /run/secrets/key}}
          cache: {key: "deps-{{ hashFiles('requirements.txt') }}", paths: [.venv-cache/]}
          reports: {junit: [reports/junit.xml], coverage: [coverage.xml]}
        secrets-scan:
          gate: secret-scan      # a built-in gate instead of ``run`` (see gates.py)
          paths: [src/]          # default: the whole working directory
          allow: ["tests/fixtures/*"]
        package:
          needs: [test, secrets-scan]
          build: catalog         # Conveyor builds and signs the artifact (artifacts/build.py)
        staging:
          needs: [package]
          deploy: {env: staging} # releases package's digest and follows the rollout
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from conveyor.pipeline.gates import gate_names

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_JOB_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")

MatrixValue = str | int | float | bool


def parse_duration(value: object) -> float:
    """Seconds from ``90``, ``"90s"``, ``"10m"``; shared by ``timeout`` fields."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    else:
        raise ValueError(f"{value!r} is not a duration; write e.g. 30, '30s', '10m' or '1h'")
    if seconds <= 0:
        raise ValueError("a timeout must be positive")
    return seconds


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class SecretSource(_Strict):
    """Where a secret's value comes from; exactly one of ``env`` or ``file``."""

    env: str | None = None
    file: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretSource:
        if (self.env is None) == (self.file is None):
            raise ValueError("a secret names exactly one source: {env: NAME} or {file: PATH}")
        return self


def _relative(paths: list[str]) -> list[str]:
    """Jobs may only cache and report inside their working directory."""
    for path in paths:
        if path.startswith("/") or ".." in path.replace("\\", "/").split("/"):
            raise ValueError(f"{path!r} must be relative to the working directory, without '..'")
    return paths


class CacheSpec(_Strict):
    """``key`` and ``restore_keys`` are templates (``{{ hashFiles('x') }}``, ``{{ vars.y }}``)."""

    key: str = Field(min_length=1)
    paths: list[str] = Field(min_length=1)
    restore_keys: list[str] = Field(default_factory=list)

    _paths = field_validator("paths")(_relative)


class ReportsSpec(_Strict):
    """Report files (globs, relative to the working directory) parsed into evidence."""

    junit: list[str] = Field(default_factory=list)
    coverage: list[str] = Field(default_factory=list)  # Cobertura XML (coverage.py xml)

    _paths = field_validator("junit", "coverage")(_relative)


def _service_form(value: object) -> object:
    """``build: catalog`` is shorthand for ``build: {service: catalog}``."""
    return {"service": value} if isinstance(value, str) else value


class BuildJobSpec(_Strict):
    """Build a service's artifact once, signed, with this run in its provenance."""

    service: str = Field(min_length=1)


class DeployJobSpec(_Strict):
    """Release an artifact to an environment through the Conveyor server, and follow it.

    ``service`` defaults to the service of the build job it needs; ``artifact`` (a template,
    e.g. ``{{ needs.build.outputs.digest }}``) defaults to that build's digest.
    """

    env: str = Field(min_length=1)
    service: str | None = None
    artifact: str | None = None
    set: dict[str, str] = Field(default_factory=dict)
    timeout: float = 3600.0

    @field_validator("timeout", mode="before")
    @classmethod
    def _duration(cls, value: object) -> float:
        return parse_duration(value)


class JobSpec(_Strict):
    """One job as written; a ``matrix`` makes it a template for several (see plan.py)."""

    run: str | Annotated[list[str], Field(min_length=1)] | None = None
    gate: str | None = None
    build: Annotated[BuildJobSpec | None, BeforeValidator(_service_form)] = None
    deploy: DeployJobSpec | None = None
    paths: list[str] = Field(default_factory=list)
    allow: list[str] = Field(default_factory=list)
    needs: list[str] = Field(default_factory=list)
    if_: str | None = Field(default=None, alias="if")
    matrix: dict[str, Annotated[list[MatrixValue], Field(min_length=1)]] = Field(
        default_factory=dict
    )
    timeout: float | None = None
    retries: int = Field(default=0, ge=0, le=10)
    env: dict[str, str] = Field(default_factory=dict)
    secrets: dict[str, SecretSource] = Field(default_factory=dict)
    cache: CacheSpec | None = None
    reports: ReportsSpec = Field(default_factory=ReportsSpec)

    _gate_paths = field_validator("paths")(_relative)

    @model_validator(mode="after")
    def _one_kind(self) -> JobSpec:
        kinds = [k for k in ("run", "gate", "build", "deploy") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(
                "a job has exactly one of 'run: COMMAND', 'gate: NAME', 'build: SERVICE' or "
                "'deploy: {env: ENV}'" + (f" (this one has {' and '.join(kinds)})" if kinds else "")
            )
        if self.kind in ("build", "deploy") and self.matrix:
            raise ValueError(f"a {self.kind} job has no matrix: it builds or deploys once")
        if self.gate is None and (self.paths or self.allow):
            raise ValueError("'paths' and 'allow' belong to a 'gate:' job (e.g. secret-scan)")
        return self

    @property
    def kind(self) -> str:
        """run, gate, build or deploy: what the runner does for this job."""
        return next(k for k in ("run", "gate", "build", "deploy") if getattr(self, k) is not None)

    @field_validator("gate")
    @classmethod
    def _known_gate(cls, value: str | None) -> str | None:
        known = gate_names()
        if value is not None and value not in known:
            raise ValueError(f"{value!r} is not a gate; known gates: {', '.join(known)}")
        return value

    @field_validator("timeout", mode="before")
    @classmethod
    def _duration(cls, value: object) -> float | None:
        return None if value is None else parse_duration(value)

    @field_validator("needs", mode="before")
    @classmethod
    def _one_need(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @field_validator("env", "secrets")
    @classmethod
    def _env_names(cls, value: dict[str, object]) -> dict[str, object]:
        for name in value:
            if not _ENV_NAME.match(name):
                raise ValueError(f"{name!r} is not an environment variable name")
        return value


class PipelineSpec(_Strict):
    """The ``pipeline:`` block; ``max_parallel`` None means the CPU count."""

    jobs: dict[str, JobSpec] = Field(min_length=1)
    vars: dict[str, str] = Field(default_factory=dict)
    fail_fast: bool = True
    max_parallel: int | None = Field(default=None, ge=1)

    @field_validator("jobs")
    @classmethod
    def _job_names(cls, value: dict[str, JobSpec]) -> dict[str, JobSpec]:
        for name in value:
            if not _JOB_NAME.match(name):
                raise ValueError(
                    f"{name!r} is not a job name: use letters, digits, '_', '-' and '.'"
                )
        return value
