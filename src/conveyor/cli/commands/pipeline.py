"""`conveyor run`, `export` and `init`: the pipeline from a shell, a laptop or a CI host.

The same `conveyor run --job X` is what an exported workflow calls, so a pipeline behaves
the same everywhere. Where a run happens (branch, tag, changed paths) comes from git, then
from the CI host's variables (CI checkouts are often a detached HEAD), and `--branch`
overrides both. Every run leaves its result as a record under `.conveyor/runs/` (``runs``),
which `conveyor evidence` reads back; what the project must know of it goes to the server
(``pipeline_actions``).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from conveyor.cli import render
from conveyor.cli.context import Context
from conveyor.cli.options import json_option, pass_ctx
from conveyor.config.pipeline import PipelineSpec
from conveyor.errors import ConveyorError, PipelineError
from conveyor.pipeline.export import DEFAULT_INSTALL, FORMATS, export
from conveyor.pipeline.plan import Plan, PlannedJob, RunContext, build_plan
from conveyor.pipeline.runner import JobResult, PipelineRunner, RunResult
from conveyor.pipeline.select import only_job, until_job

if TYPE_CHECKING:
    from rich.table import Table

LOG_TAIL = 30


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_context(root: Path, branch: str | None, variables: Mapping[str, str]) -> RunContext:
    """Branch, tag and changed paths (relative to ``root``); unknown parts stay None."""
    env = os.environ
    tag = _git(root, "describe", "--exact-match", "--tags", "HEAD") or None
    if tag is None and env.get("GITHUB_REF_TYPE") == "tag":
        tag = env.get("GITHUB_REF_NAME")
    tag = tag or env.get("CI_COMMIT_TAG") or None
    if branch is None:
        current = _git(root, "rev-parse", "--abbrev-ref", "HEAD")
        branch = current if current and current != "HEAD" else None
    if branch is None and env.get("GITHUB_REF_TYPE") != "tag":
        branch = env.get("GITHUB_HEAD_REF") or env.get("GITHUB_REF_NAME") or None
    branch = branch or env.get("CI_COMMIT_BRANCH") or None
    changed: tuple[str, ...] | None = None
    diff = _git(root, "diff", "--name-only", "--relative", "HEAD~1")
    untracked = _git(root, "ls-files", "--others", "--exclude-standard")
    if diff is not None and untracked is not None:
        changed = tuple(sorted({*diff.splitlines(), *untracked.splitlines()} - {""}))
    return RunContext(branch=branch, tag=tag, changed=changed, extra_vars=dict(variables))


def _parse_vars(pairs: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise PipelineError(f"--var {pair!r} is not KEY=VALUE", hint="e.g. --var python=3.12")
        out[key] = value
    return out


def _pipeline(ctx: Context) -> tuple[PipelineSpec, Path]:
    project = ctx.project()
    spec = project.config.pipeline
    if spec is None:
        raise PipelineError(
            f"{project.file} declares no pipeline",
            hint="add a 'pipeline:' block with jobs, or 'pipeline: {extends: PATH}'; "
            "see docs/pipelines.md",
        )
    return spec, project.root


class _View:
    """What the live table shows; fed by the runner's task, read by rich's refresh thread."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.started: dict[str, float] = {}
        self.done: dict[str, JobResult] = {}

    def table(self) -> Table:
        from rich.table import Table

        table = Table(show_edge=False, pad_edge=False)
        for column in ("job", "needs", "state", "time"):
            table.add_column(column)
        now = time.monotonic()
        for job in self.plan.jobs:
            result = self.done.get(job.name)
            if result is not None:
                state, seconds = result.result, result.duration
            elif job.name in self.started:
                state, seconds = "running", now - self.started[job.name]
            else:
                state, seconds = "pending", 0.0
            note = f" [dim]({render.esc(result.reason)})[/]" if result and result.reason else ""
            table.add_row(
                render.esc(job.name),
                render.esc(", ".join(job.needs)),
                render.job_state(state) + note,
                f"{seconds:.1f}s" if seconds else "",
            )
        return table

    def __rich__(self) -> Table:
        return self.table()


class _WatchedRunner(PipelineRunner):
    view: _View

    async def _job(self, job: PlannedJob, states: Mapping[str, Any]) -> JobResult:
        self.view.started[job.name] = time.monotonic()
        result = await super()._job(job, states)
        self.view.done[job.name] = result
        return result


def _print_failures(result: RunResult) -> None:
    console = render.out()
    for job in result.jobs:
        if job.result != "failure":
            continue
        lines = job.log.splitlines()[-LOG_TAIL:]
        console.print(
            f"\n[bold red]{render.esc(job.name)} failed[/]: {render.esc(job.reason or '')}"
        )
        for line in lines:
            console.print(f"  [dim]|[/] {render.esc(line)}")


@click.command("run")
@click.option("--job", "job", help="Run only this job (its needs are assumed done: CI mode).")
@click.option("--until", "until", help="Run this job and everything it needs.")
@click.option("--var", "variables", multiple=True, help="KEY=VALUE, overrides pipeline vars.")
@click.option("--branch", help="Branch the conditions see (default: from git / the CI host).")
@json_option
@pass_ctx
def run(
    ctx: Context,
    job: str | None,
    until: str | None,
    variables: tuple[str, ...],
    branch: str | None,
    as_json: bool,
) -> None:
    """Run the pipeline here: its DAG with bounded parallelism, fail-fast, cached, masked."""
    from conveyor.artifacts.workspace import job_workspace
    from conveyor.cli.pipeline_actions import ProjectActions
    from conveyor.cli.runs import new_run_id, store_run
    from conveyor.pipeline.runner import job_user
    from conveyor.run_as import current, root_warning

    if job and until:
        raise PipelineError("--job and --until cannot be combined", hint="pick one")
    spec, root = _pipeline(ctx)
    if job:
        spec = only_job(spec, job)
    elif until:
        spec = until_job(spec, until)
    plan = build_plan(spec)
    user = job_user(spec.run_as)  # a user this host lacks fails here, before any job
    warning = root_warning(current(), {}, [spec.run_as])
    if warning and not as_json:
        render.err().print(f"[yellow]warning[/]: {render.esc(warning)}")
    context = git_context(root, branch, _parse_vars(variables))
    view = _View(plan)
    run_id = new_run_id()
    layout = ctx.layout
    actions = ProjectActions(ctx.project(), run_id, context, commit=_git(root, "rev-parse", "HEAD"))
    try:
        actions.started([job.name for job in plan.jobs])
        console = render.out()
        live = not as_json and console.is_terminal
        with job_workspace(layout.directory(layout.workspaces), root, user) as place:
            runner = _WatchedRunner(
                plan,
                place.path,
                context=context,
                cache_dir=layout.cache,
                actions=actions,
                run_as=place.run_as,
                gate_dir=root,
            )
            runner.view = view
            if live:
                from rich.live import Live

                with Live(view, console=console, refresh_per_second=4) as screen:
                    result = asyncio.run(runner.run())
                    view.done = {job.name: job for job in result.jobs}  # skips never reach _job
                    screen.refresh()
            else:
                result = asyncio.run(runner.run())
        actions.finished(result)
    finally:
        actions.close()
    extra = {"id": run_id, "artifacts": actions.built, "problems": actions.problems}
    record = store_run(layout, result, context, run_id, extra)
    if as_json:
        render.emit_json({"id": run_id, **result.to_dict()})
    else:
        view.done = {job.name: job for job in result.jobs}
        if not live:
            console.print(view.table())
        _print_failures(result)
        for problem in actions.problems:
            console.print(f"[yellow]warning[/]: {render.esc(problem)}")
        style = "green" if result.result == "success" else "red"
        console.print(
            f"[{style}]pipeline {result.result}[/] in {result.duration:.1f}s "
            f"[dim](record: {render.esc(record.relative_to(root))})[/]"
        )
    if result.result != "success":
        sys.exit(1)


@click.command("export")
@click.argument("kind", type=click.Choice(FORMATS))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write here.")
@click.option("--install", default=DEFAULT_INSTALL, show_default=True, help="Install step.")
@pass_ctx
def export_command(ctx: Context, kind: str, output: Path | None, install: str) -> None:
    """Write a GitHub Actions or GitLab CI workflow that calls `conveyor run --job` per job."""
    spec, root = _pipeline(ctx)
    top = _git(root, "rev-parse", "--show-toplevel")
    directory = os.path.relpath(root, Path(top).resolve()) if top else "."
    text = export(spec, kind, directory=directory, install=install)
    if output is None:
        click.echo(text, nl=False)
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    render.out().print(f"wrote {render.esc(output)} ({len(spec.jobs)} jobs)")


SERVICE_CONFIG = """\
# Created by `conveyor init --template`. The pipeline is the shared template's: override
# vars or jobs under `pipeline:` only where this service differs (see docs/pipelines.md).
project: {name}
services:
  {name}:
    build: {{run: "make build", outputs: [dist/]}}
    run: "./dist/run"
environments:
  dev:
pipeline:
  extends: {template}
"""


@click.command("init")
@click.option(
    "--template",
    "template",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Pipeline template the service extends.",
)
@click.argument("service")
@pass_ctx
def init(ctx: Context, template: Path, service: str) -> None:
    """Create SERVICE/conveyor.yaml whose pipeline extends a shared template."""
    from conveyor.config.loader import load_project

    target = ctx.directory / service
    config = target / "conveyor.yaml"
    if config.exists():
        raise ConveyorError(f"{config} already exists", hint="edit it, or pick another SERVICE")
    source = template if template.is_absolute() else Path.cwd() / template
    if not source.is_file():
        raise ConveyorError(f"template {template} not found", hint="pass a path to a YAML file")
    relative = os.path.relpath(source.resolve(), target.resolve())
    created = not target.exists()
    target.mkdir(parents=True, exist_ok=True)
    config.write_text(SERVICE_CONFIG.format(name=service, template=relative), encoding="utf-8")
    try:
        spec = load_project(config).config.pipeline
    except ConveyorError:
        config.unlink()
        if created:
            target.rmdir()
        raise
    jobs = ", ".join(spec.jobs) if spec is not None else ""
    render.out().print(f"created {render.esc(config)} (jobs: {render.esc(jobs)})")
