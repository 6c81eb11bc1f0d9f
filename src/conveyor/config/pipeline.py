"""The ``pipeline:`` block of conveyor.yaml, as frozen pydantic models.

The pipeline is part of the config, not a second file with a second reader: the loader reads
it with the rest of conveyor.yaml, so ``conveyor validate`` reports a pipeline mistake with
its file, line, dotted field and hint like any other, and the JSON Schema describes it. The
engine (``conveyor.pipeline``: planning, running, gates) sits above config and imports these
models; nothing here imports it.

The models describe the *resolved* pipeline: ``extends:`` templates are merged into the
block before validation (``extends.py``), so ``PipelineSpec`` never holds ``extends``. Its
JSON Schema, which describes what users *write*, adds ``extends`` back and lets a block
that extends a template leave out ``jobs`` and give only part of a job.

They do no I/O and resolve nothing: matrix expansion, ordering and ``if:`` conditions are
``conveyor.pipeline.plan``'s, secrets are read by the runner at the last moment so that no
model, plan or result ever holds a secret value. Gate names are checked against
``config.gates``, which lists plugins without importing them.

Shape::

    pipeline:
      extends: ../template.yaml  # optional; merged in first, this block wins
      vars: {python: "3.11"}
      fail_fast: true
      max_parallel: 4            # default: the CPU count
      jobs:
        build:
          run: make build        # a string runs under ``sh -c``; a list is exec'd as is
        test:
          needs: [build]         # or needs: build
          if: "branch == 'main' and needs.build.outputs.version != ''"
          matrix: {python: ["3.11", "3.12"]}
          timeout: 10m
          retries: 2             # only for infrastructure failures, see runner.py
          env: {VERSION: "{{ needs.build.outputs.version }}"}
          secrets: {TOKEN: {env: CI_TOKEN}, KEY: {file: /run/secrets/key}}
          cache: {key: "deps-{{ hashFiles('requirements.txt') }}", paths: [.venv-cache/]}
          reports: {junit: [reports/junit.xml], coverage: [coverage.xml]}
        secrets-scan:
          gate: secret-scan      # a gate Conveyor judges instead of ``run``
          paths: [src/]          # default: the whole working directory
          allow: ["tests/fixtures/*"]
        package:
          needs: [test, secrets-scan]
          build: catalog         # Conveyor builds and signs the artifact
        staging:
          needs: [package]
          deploy: {env: staging} # releases package's digest and follows the rollout
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    WithJsonSchema,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from conveyor.config.durations import Count, PositiveDuration
from conveyor.config.gates import GATE_GROUP, gate_names, is_gate_name
from conveyor.config.names import EnvVar, RunAs
from conveyor.config.suggest import choose_hint, closest, describe, invalid

JOB_NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$"
JOB_PATH_PATTERN = r"^(?!/)(?![\s\S]*(?:^|[/\\])\.\.(?:[/\\]|$))"
"""What ``_job_path`` accepts: no leading '/', no '..' segment ('/' or '\\' separated)."""
JOB_KINDS = ("run", "gate", "build", "deploy")

MatrixValue = str | int | float | bool


def _run_form(value: object) -> object:
    """A shell string or a non-empty argv list; one clear error instead of a union's two."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(item, str) for item in value):
        return value
    raise invalid(
        f"expected a command (a string or a list of strings), got {describe(value)}",
        'write a shell command such as "make test" or an argv list such as [make, test]',
    )


def _job_name(value: str) -> str:
    if not re.fullmatch(JOB_NAME_PATTERN, value):
        raise invalid(
            f"{describe(value)} is not a job name",
            "use letters, digits, '_', '-' and '.', e.g. unit-tests",
        )
    return value


def _job_path(value: str) -> str:
    """Jobs cache, report and scan only inside their working directory."""
    if value.startswith("/") or ".." in value.replace("\\", "/").split("/"):
        raise invalid(
            f"path {describe(value)} must be relative to the working directory, without '..'",
            "paths in a job are relative to the project directory, e.g. reports/junit.xml",
        )
    return value


def _known_gate(value: str) -> str:
    if not is_gate_name(value):
        known = gate_names()
        hint = choose_hint(value, known, "gates")
        if closest(value, known) is None:
            hint += f" (a gate of your own is registered in the '{GATE_GROUP}' entry points)"
        raise invalid(f"unknown gate {describe(value)}", hint)
    return value


class _GateNamesSchema:
    """The JSON Schema of ``gate:``: the names known when the schema is generated.

    Generated, not fixed at import, so that ``conveyor schema`` lists the plugins installed
    where it runs and an editor flags ``secert-scan`` as ``conveyor validate`` does.
    """

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"type": "string", "enum": list(gate_names())}


JobName = Annotated[
    str,
    AfterValidator(_job_name),
    WithJsonSchema({"type": "string", "pattern": JOB_NAME_PATTERN}),
]
JobPath = Annotated[
    str,
    AfterValidator(_job_path),
    WithJsonSchema({"type": "string", "pattern": JOB_PATH_PATTERN}),
]
GateName = Annotated[str, AfterValidator(_known_gate), _GateNamesSchema()]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class SecretSource(_Strict):
    """Where a secret's value is read from when its job starts: exactly one of env or file."""

    env: str | None = Field(
        None,
        description="Environment variable of the process running the pipeline that holds it.",
        examples=["CI_TOKEN"],
    )
    file: str | None = Field(
        None, description="File whose content is the value.", examples=["/run/secrets/key"]
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretSource:
        if (self.env is None) == (self.file is None):
            both = "both" if self.env is not None else "neither"
            raise invalid(
                f"a secret names exactly one source, this one has {both}",
                "write {env: CI_TOKEN} or {file: /run/secrets/key}",
            )
        return self


class CacheSpec(_Strict):
    """Directories kept between runs, with the semantics of actions/cache."""

    key: str = Field(
        min_length=1,
        description="Exact cache key, a template: {{ hashFiles('glob') }}, {{ vars.X }}.",
        examples=["deps-{{ hashFiles('requirements.txt') }}"],
    )
    paths: list[JobPath] = Field(
        min_length=1,
        description="Directories or files, relative to the project, saved when the job "
        "succeeds and restored before it runs.",
        examples=[[".venv-cache/"]],
    )
    restore_keys: list[str] = Field(
        default_factory=list,
        description="Prefixes tried, in order, when the exact key misses (newest entry wins).",
        examples=[["deps-"]],
    )


class ReportsSpec(_Strict):
    """Report files a job writes, parsed into evidence (totals, failing cases)."""

    junit: list[JobPath] = Field(
        default_factory=list,
        description="JUnit XML files (globs, relative to the project).",
        examples=[["reports/junit.xml"]],
    )
    coverage: list[JobPath] = Field(
        default_factory=list,
        description="Cobertura XML files, e.g. from `coverage xml` (globs).",
        examples=[["coverage.xml"]],
    )


def _service_form(value: object) -> object:
    """``build: catalog`` is shorthand for ``build: {service: catalog}``."""
    return {"service": value} if isinstance(value, str) else value


def _one_need(value: object) -> object:
    """``needs: build`` is shorthand for ``needs: [build]``."""
    return [value] if isinstance(value, str) else value


class BuildJobSpec(_Strict):
    """Build a service's artifact once, signed, with this run in its provenance."""

    service: str = Field(
        min_length=1,
        description="The service (under services:) whose build runs.",
        examples=["catalog"],
    )


class DeployJobSpec(_Strict):
    """Release an artifact to an environment through the Conveyor server, and follow it.

    ``service`` defaults to the service of the build job it needs; ``artifact`` (a template,
    e.g. ``{{ needs.build.outputs.digest }}``) defaults to that build's digest.
    """

    env: str = Field(
        min_length=1, description="The environment to release to.", examples=["staging"]
    )
    service: str | None = Field(
        None, description="The service to release; default: that of the build job it needs."
    )
    artifact: str | None = Field(
        None,
        description="Digest to release, a template; default: the digest of the build it needs.",
        examples=["{{ vars.artifact }}"],
    )
    set: dict[str, str] = Field(
        default_factory=dict,
        description="Config for this release only, like `conveyor deploy --set`.",
        examples=[{"LOG_LEVEL": "info"}],
    )
    timeout: PositiveDuration = Field(
        3600.0, description="How long to follow the rollout before the job fails."
    )


class JobSpec(_Strict):
    """One job as written; a ``matrix`` makes it a template for several (see plan.py)."""

    run: Annotated[
        str | list[str] | None,
        BeforeValidator(_run_form),
        WithJsonSchema(
            {
                "anyOf": [
                    {"type": "string"},
                    {"type": "array", "items": {"type": "string"}, "minItems": 1},
                    {"type": "null"},
                ]
            }
        ),
    ] = Field(
        None,
        description="Command: a string runs under `sh -c`, a list is executed as is.",
        examples=["make test"],
    )
    gate: GateName | None = Field(
        None,
        description="A gate Conveyor judges itself and keeps evidence of, instead of `run`.",
        examples=["secret-scan"],
    )
    build: Annotated[
        BuildJobSpec | None,
        BeforeValidator(_service_form, json_schema_input_type=str | BuildJobSpec | None),
    ] = Field(
        None,
        description="Build this service's artifact (`build: SERVICE` or `{service: SERVICE}`).",
        examples=["catalog"],
    )
    deploy: DeployJobSpec | None = Field(
        None, description="Release the artifact built upstream to an environment, and follow it."
    )
    paths: list[JobPath] = Field(
        default_factory=list,
        description="For a gate: what it checks, relative to the project (default: all of it).",
        examples=[["src/"]],
    )
    allow: list[str] = Field(
        default_factory=list,
        description="For a gate: globs of files whose findings are excused (and counted).",
        examples=[["tests/fixtures/*"]],
    )
    needs: Annotated[
        list[str], BeforeValidator(_one_need, json_schema_input_type=str | list[str])
    ] = Field(
        default_factory=list,
        description="Jobs that must finish first (`needs: NAME` or a list); a failed or "
        "skipped need skips this job unless its `if:` says otherwise.",
        examples=[["build"]],
    )
    if_: str | None = Field(
        None,
        alias="if",
        description="Run only when this condition holds: branch, tag, vars.X, matrix.X, "
        "needs.JOB.result, needs.JOB.outputs.X, changed('glob'), success(), always(), ...",
        examples=["branch == 'main' and changed('src/**')"],
    )
    matrix: dict[str, Annotated[list[MatrixValue], Field(min_length=1)]] = Field(
        default_factory=dict,
        description="Run one job per combination of these values, named job[key=value].",
        examples=[{"python": ["3.11", "3.12"]}],
    )
    timeout: PositiveDuration | None = Field(
        None, description="Kill the job's process group after this long (default: no limit)."
    )
    retries: Count = Field(
        0,
        ge=0,
        le=10,
        description="Retries after an infrastructure failure (exit 75, killed by a signal); "
        "a test that fails is not retried.",
    )
    env: dict[EnvVar, str] = Field(
        default_factory=dict,
        description="Environment variables; values are templates ({{ needs.JOB.outputs.X }}).",
        examples=[{"VERSION": "{{ needs.build.outputs.version }}"}],
    )
    secrets: dict[EnvVar, SecretSource] = Field(
        default_factory=dict,
        description="Secrets handed to this job's process only, masked in every log.",
        examples=[{"TOKEN": {"env": "CI_TOKEN"}}],
    )
    cache: CacheSpec | None = Field(None, description="Directories kept between runs.")
    reports: ReportsSpec = Field(
        default_factory=ReportsSpec, description="Test and coverage reports kept as evidence."
    )

    @model_validator(mode="after")
    def _one_kind(self) -> JobSpec:
        kinds = [k for k in JOB_KINDS if getattr(self, k) is not None]
        if not kinds:
            raise invalid(
                "a job needs one of run, gate, build or deploy",
                "e.g. run: make test, gate: secret-scan, build: SERVICE or deploy: {env: ENV}",
            )
        if len(kinds) > 1:
            raise invalid(
                f"a job has exactly one of run, gate, build or deploy; this one has "
                f"{' and '.join(kinds)}",
                "split it into jobs, the later one with needs: [the earlier one]",
            )
        if self.kind in ("build", "deploy") and self.matrix:
            raise invalid(
                f"a {self.kind} job has no matrix: it builds or deploys once",
                "remove matrix: from this job",
            )
        if self.gate is None and (self.paths or self.allow):
            raise invalid(
                "'paths' and 'allow' belong to a gate job",
                "add gate: NAME (e.g. gate: secret-scan), or remove paths: and allow:",
            )
        return self

    @property
    def kind(self) -> Literal["run", "gate", "build", "deploy"]:
        """What the runner does for this job."""
        if self.gate is not None:
            return "gate"
        if self.build is not None:
            return "build"
        if self.deploy is not None:
            return "deploy"
        return "run"


class PipelineSpec(_Strict):
    """The ``pipeline:`` block, with its ``extends:`` templates merged in."""

    RESOLVED_KEYS: ClassVar[tuple[str, ...]] = ("extends",)
    """Keys users write that the loader resolves away before validation (``extends.py``)."""

    jobs: dict[JobName, JobSpec] = Field(
        min_length=1,
        description="The jobs by name; `needs` makes them a DAG, declaration order breaks ties.",
        examples=[{"test": {"run": "make test"}}],
    )
    vars: dict[str, str] = Field(
        default_factory=dict,
        description="Values jobs read as {{ vars.X }} and conditions as vars.X "
        "(`conveyor run --var` overrides them).",
        examples=[{"python": "3.11"}],
    )
    fail_fast: bool = Field(
        True, description="A failure cancels the running jobs and skips the rest."
    )
    max_parallel: Count | None = Field(
        None, ge=1, description="Jobs run at once (default: the CPU count).", examples=[4]
    )
    run_as: RunAs | None = Field(
        None,
        description="The unprivileged user (`user` or `user:group`) `run:` jobs run as, in a "
        "copy of the project it owns; needs `conveyor run` to run as root. Left out: the "
        "project's `run_as`, if any (`null` keeps jobs as the user running `conveyor run`).",
        examples=["conveyor-run"],
    )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        """The block as written: ``extends:`` too, and then ``jobs`` may be partial.

        A block that extends a template may override one field of a template job, or remove
        it with ``null``, so with a template nothing about a job is required here; the whole
        merged pipeline is checked by ``conveyor validate``.
        """
        schema = handler(core_schema)
        target: dict[str, Any] = handler.resolve_ref_schema(schema)
        extends = {
            "type": "string",
            "minLength": 1,
            "description": "A template this block extends: a file holding a pipeline block "
            "(bare or under 'pipeline:'), relative to this file. It is merged in first; this "
            "block wins, a job set to null is removed, templates may extend templates.",
            "examples": ["../template.yaml"],
        }
        target["description"] = (
            "The service's pipeline: jobs forming a DAG, run by `conveyor run`, optionally "
            "extending a shared template."
        )
        target["properties"] = {"extends": extends, **target["properties"]}
        target.pop("required", None)
        target["anyOf"] = [{"required": ["jobs"]}, {"required": ["extends"]}]
        jobs = target["properties"]["jobs"]
        jobs["additionalProperties"] = {"anyOf": [jobs["additionalProperties"], {"type": "null"}]}
        return schema
