"""Which part of a pipeline ``conveyor run --job`` / ``--until`` runs, decided on the spec.

``--job NAME`` runs that job alone (all its matrix variants) with its needs dropped: this is
what a CI system calls once per job after running the needs in earlier CI jobs. ``--until
NAME`` runs that job and everything it depends on, in order, as a partial local run.
Selecting on the spec, not the plan, keeps the engine unaware of partial runs.
"""

from __future__ import annotations

from conveyor.config.pipeline import PipelineSpec
from conveyor.errors import PipelineError


def _base(name: str) -> str:
    return name.split("[", 1)[0]


def _check(spec: PipelineSpec, name: str, option: str) -> None:
    if name not in spec.jobs:
        raise PipelineError(
            f"{option} {name}: no such job in this pipeline",
            hint="known jobs: " + ", ".join(spec.jobs),
        )


def only_job(spec: PipelineSpec, name: str) -> PipelineSpec:
    _check(spec, name, "--job")
    deploy = spec.jobs[name].deploy
    if deploy is not None and deploy.artifact is None:
        raise PipelineError(
            f"--job {name}: a deploy job run alone cannot see the digest its build produced",
            hint=f"run `conveyor run --until {name}` (builds, then deploys), or set "
            f'jobs.{name}.deploy.artifact to "{{{{ vars.artifact }}}}" and pass '
            "--var artifact=sha256:…",
        )
    job = spec.jobs[name].model_copy(update={"needs": []})
    return spec.model_copy(update={"jobs": {name: job}})


def until_job(spec: PipelineSpec, name: str) -> PipelineSpec:
    _check(spec, name, "--until")
    keep: set[str] = set()
    stack = [name]
    while stack:
        current = stack.pop()
        if current in keep or current not in spec.jobs:
            continue
        keep.add(current)
        stack.extend(_base(need) for need in spec.jobs[current].needs)
    jobs = {job: value for job, value in spec.jobs.items() if job in keep}
    return spec.model_copy(update={"jobs": jobs})
