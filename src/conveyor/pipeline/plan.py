"""Pure planning: matrix expansion, validation, order, and the run-or-skip decision.

Nothing here starts a process or reads a file, so the whole DAG semantics (which job runs,
which is skipped and why) is a function of the spec, the context and the results so far,
and is tested as such. The runner asks ``decide`` once per job, when all its needs are done.

Skip rules, in order:

1. A job whose ``if`` calls a status function (``always()``, ``failure()``, ...) is decided by
   its condition alone; this is how cleanup and notification jobs opt in.
2. Otherwise, after a fail-fast stop every job not yet started is skipped.
3. Otherwise, a job whose needs did not all succeed is skipped (skips propagate down the DAG).
4. Otherwise its ``if`` (if any) decides.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from conveyor.config.pipeline import JobSpec, MatrixValue, PipelineSpec
from conveyor.errors import ExpressionError, PipelineError
from conveyor.pipeline.conditions import Condition, compile_condition, evaluate_condition

RESULTS = ("success", "failure", "skipped", "cancelled")


@dataclass(frozen=True)
class PlannedJob:
    """One runnable job after matrix expansion; ``needs`` are expanded names."""

    name: str
    base: str
    spec: JobSpec
    matrix: Mapping[str, MatrixValue]
    needs: tuple[str, ...]
    condition: Condition | None
    service: str | None = None
    """The service a build or deploy job is about (a deploy's defaults to its build's)."""
    build_job: str | None = None
    """For a deploy job without ``artifact:``, the build job whose digest it releases."""


@dataclass(frozen=True)
class Plan:
    """Jobs in a topological order (ties broken by declaration order)."""

    jobs: tuple[PlannedJob, ...]
    vars: Mapping[str, str]
    fail_fast: bool
    max_parallel: int | None

    def job(self, name: str) -> PlannedJob:
        for job in self.jobs:
            if job.name == name:
                return job
        raise KeyError(name)


@dataclass(frozen=True)
class RunContext:
    """Where a run happens; ``changed`` None means "unknown" (every ``changed()`` is true)."""

    branch: str | None = None
    tag: str | None = None
    changed: tuple[str, ...] | None = None
    extra_vars: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class NeedState:
    """What a later job may read about a finished one."""

    result: str
    outputs: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Run:
    pass


@dataclass(frozen=True)
class Skip:
    reason: str


Decision = Run | Skip


def _format(value: MatrixValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def expand_matrix(
    name: str, matrix: Mapping[str, Sequence[MatrixValue]]
) -> list[tuple[str, dict[str, MatrixValue]]]:
    """``build`` x {a: [1, 2], b: [x]} -> ``build[a=1,b=x]``, ``build[a=2,b=x]``."""
    if not matrix:
        return [(name, {})]
    keys = list(matrix)
    variants = []
    for values in itertools.product(*(matrix[k] for k in keys)):
        combo = dict(zip(keys, values, strict=True))
        label = ",".join(f"{k}={_format(v)}" for k, v in combo.items())
        variants.append((f"{name}[{label}]", combo))
    return variants


def build_plan(spec: PipelineSpec) -> Plan:
    """Expand, validate and order; every problem raises ``PipelineError`` naming the job."""
    variants = {base: expand_matrix(base, job.matrix) for base, job in spec.jobs.items()}
    by_name = {name: base for base, vs in variants.items() for name, _ in vs}
    planned: list[PlannedJob] = []
    for base, job in spec.jobs.items():
        needs: list[str] = []
        for need in job.needs:
            if need in variants:
                needs.extend(name for name, _ in variants[need])
            elif need in by_name:
                needs.append(need)
            else:
                raise PipelineError(
                    f"job '{base}' needs '{need}', which is not a job in this pipeline",
                    hint="known jobs: " + ", ".join(spec.jobs),
                )
        condition = None
        if job.if_ is not None:
            try:
                condition = compile_condition(job.if_)
            except ExpressionError as error:
                raise PipelineError(
                    f"job '{base}': its if: condition is invalid: {error.message}", error.hint
                ) from None
        service, build_job = _artifact_source(base, spec)
        for name, combo in variants[base]:
            planned.append(
                PlannedJob(name, base, job, combo, tuple(needs), condition, service, build_job)
            )
    return Plan(_order(planned), dict(spec.vars), spec.fail_fast, spec.max_parallel)


def _upstream(base: str, spec: PipelineSpec) -> list[str]:
    """Every job ``base`` needs, directly or not, nearest first; unknown needs are ignored."""
    seen: list[str] = []
    frontier = list(spec.jobs[base].needs)
    while frontier:
        name = frontier.pop(0)
        if name in seen or name not in spec.jobs:
            continue
        seen.append(name)
        frontier.extend(spec.jobs[name].needs)
    return seen


def _artifact_source(base: str, spec: PipelineSpec) -> tuple[str | None, str | None]:
    """(service, build job) of a build or deploy job; a deploy must be able to find both.

    Deploying "what this pipeline built" is the point of a pipeline, so a deploy job without
    ``artifact:`` releases the digest of the build job it needs (directly or not) and
    refuses to guess between two.
    """
    job = spec.jobs[base]
    if job.build is not None:
        return job.build.service, None
    if job.deploy is None:
        return None, None
    deploy = job.deploy
    builds = [
        name
        for name in _upstream(base, spec)
        if (b := spec.jobs[name].build) is not None
        and (deploy.service is None or b.service == deploy.service)
    ]
    if deploy.artifact is not None:
        service = deploy.service or (_single_service(builds, spec) if builds else None)
        if service is None:
            raise PipelineError(
                f"deploy job '{base}' does not say which service it deploys",
                hint=f"add service: to jobs.{base}.deploy",
            )
        return service, None
    if builds and _single_service(builds, spec) is None:
        raise PipelineError(
            f"deploy job '{base}' needs builds of several services: " + ", ".join(builds),
            hint=f"name the one it deploys: jobs.{base}.deploy.service",
        )
    if not builds:
        what = f"service '{deploy.service}'" if deploy.service else "a service"
        raise PipelineError(
            f"deploy job '{base}' needs no job that builds {what}, so it has nothing to deploy",
            hint=f"add the build job to jobs.{base}.needs, or set jobs.{base}.deploy.artifact",
        )
    nearest = builds[0]
    build = spec.jobs[nearest].build
    assert build is not None
    return build.service, nearest


def _single_service(builds: list[str], spec: PipelineSpec) -> str | None:
    services = {b.service for name in builds if (b := spec.jobs[name].build) is not None}
    return services.pop() if len(services) == 1 else None


def _order(jobs: list[PlannedJob]) -> tuple[PlannedJob, ...]:
    position = {job.name: index for index, job in enumerate(jobs)}
    waiting = {job.name: len(set(job.needs)) for job in jobs}
    dependants: dict[str, list[str]] = {job.name: [] for job in jobs}
    for job in jobs:
        for need in set(job.needs):
            if need == job.name:
                raise PipelineError(f"job '{job.base}' needs itself", hint="remove it from needs")
            dependants[need].append(job.name)
    ready = [position[name] for name, count in waiting.items() if count == 0]
    heapq.heapify(ready)
    ordered: list[PlannedJob] = []
    while ready:
        job = jobs[heapq.heappop(ready)]
        ordered.append(job)
        for name in dependants[job.name]:
            waiting[name] -= 1
            if waiting[name] == 0:
                heapq.heappush(ready, position[name])
    if len(ordered) < len(jobs):
        cycle = _find_cycle({j.name: j.needs for j in jobs}, {j.name for j in ordered})
        raise PipelineError(
            "jobs form a cycle: " + " -> ".join(cycle),
            hint="remove one of these needs so the jobs can run in some order",
        )
    return tuple(ordered)


def _find_cycle(needs: Mapping[str, Sequence[str]], done: set[str]) -> list[str]:
    """Walk needs from any unordered job until a name repeats: that loop is a cycle."""
    start = next(name for name in needs if name not in done)
    path: list[str] = []
    seen: dict[str, int] = {}
    current = start
    while current not in seen:
        seen[current] = len(path)
        path.append(current)
        current = next(n for n in needs[current] if n not in done)
    return [*path[seen[current] :], current]


def condition_names(
    job: PlannedJob, plan: Plan, context: RunContext, states: Mapping[str, NeedState]
) -> dict[str, object]:
    """The names an ``if:`` or a template of ``job`` may read."""
    needs: dict[str, object] = {}
    groups: dict[str, list[NeedState]] = {}
    for name in job.needs:
        state = states[name]
        needs[name] = {"result": state.result, "outputs": dict(state.outputs)}
        base = name.split("[", 1)[0]
        if base != name:
            groups.setdefault(base, []).append(state)
    for base, members in groups.items():
        results = [m.result for m in members]
        if all(r == "success" for r in results):
            result = "success"
        elif any(r in ("failure", "cancelled") for r in results):
            result = "failure"
        else:
            result = "skipped"
        outputs = {k: v for m in members for k, v in m.outputs.items()}
        needs[base] = {"result": result, "outputs": outputs}
    return {
        "branch": context.branch,
        "tag": context.tag,
        "vars": {**plan.vars, **context.extra_vars},
        "matrix": dict(job.matrix),
        "needs": needs,
    }


def decide(
    job: PlannedJob,
    plan: Plan,
    context: RunContext,
    states: Mapping[str, NeedState],
    stopped_by: str | None = None,
) -> Decision:
    """Run or skip ``job`` now that its needs are done; ``stopped_by`` names a fail-fast stop."""
    results = [states[name].result for name in job.needs]
    condition = job.condition
    if condition is None or not condition.uses_status:
        if stopped_by is not None:
            return Skip(f"fail-fast: '{stopped_by}' failed")
        unmet = [n for n in job.needs if states[n].result != "success"]
        if unmet:
            return Skip(f"need '{unmet[0]}' was {states[unmet[0]].result}")
        if condition is None:
            return Run()
    names = condition_names(job, plan, context, states)
    try:
        if evaluate_condition(condition, names, results, context.changed):
            return Run()
    except ExpressionError as error:
        raise PipelineError(
            f"job '{job.name}': its if: condition cannot be evaluated: {error.message}",
            error.hint,
        ) from None
    return Skip(f"if: {condition.text} is false")
