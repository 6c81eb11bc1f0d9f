"""`conveyor run` and `conveyor export`: the pipeline from a shell, a laptop or a CI host.

The same `conveyor run --job X` is what an exported workflow calls, so a pipeline behaves
the same everywhere. Where a run happens (branch, tag, changed paths) comes from git, then
from the CI host's variables (CI checkouts are often a detached HEAD), and `--branch`
overrides both. Every run leaves its result as JSON under `.conveyor/runs/`: the evidence
that the ledger points at, and what `conveyor evidence` (evidence_commands.py) reads back.

Kept apart from main.py (which other commands crowd) and registered there by
``add_commands``; this module imports nothing from main.py so either can be imported first.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from conveyor.cli import render
from conveyor.cli.pipeline_actions import ProjectActions
from conveyor.config.loader import load_project
from conveyor.errors import ConveyorError
from conveyor.pipeline.export import DEFAULT_INSTALL, FORMATS, export
from conveyor.pipeline.model import PipelineSpec
from conveyor.pipeline.plan import PipelineError, Plan, PlannedJob, RunContext, build_plan
from conveyor.pipeline.runner import JobResult, PipelineRunner, RunResult
from conveyor.pipeline.select import only_job, until_job
from conveyor.pipeline.templates import load_pipeline

if TYPE_CHECKING:
    from conveyor.cli.main import Context

F = TypeVar("F", bound=Callable[..., Any])
LOG_TAIL = 30
STATE_STYLE = {
    "success": "green",
    "failure": "red",
    "cancelled": "yellow",
    "skipped": "dim",
    "running": "cyan",
    "pending": "dim",
}


def handled(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ConveyorError as exc:
            if kwargs.get("as_json"):
                render.emit_json(exc.to_dict())
            else:
                render.error(exc)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


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
    spec = load_pipeline(project.file)
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
            style = STATE_STYLE.get(state, "white")
            note = f" [dim]({escape(result.reason)})[/]" if result and result.reason else ""
            table.add_row(
                escape(job.name),
                escape(", ".join(job.needs)),
                f"[{style}]{state}[/]{note}",
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


def new_run_id() -> str:
    """A run's name: its start time, so records sort by time and `latest` is the last."""
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")


def store_run(
    root: Path,
    result: RunResult,
    context: RunContext,
    run_id: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Keep the run's result as evidence under ``.conveyor/runs/RUN_ID.json``."""
    runs = root / ".conveyor" / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    path = runs / f"{run_id or new_run_id()}.json"
    record = {
        "run": result.to_dict(),
        "context": {"branch": context.branch, "tag": context.tag, "changed": context.changed},
        **(extra or {}),
    }
    path.write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
    return path


def _print_failures(result: RunResult) -> None:
    for job in result.jobs:
        if job.result != "failure":
            continue
        lines = job.log.splitlines()[-LOG_TAIL:]
        render.console.print(
            f"\n[bold red]{escape(job.name)} failed[/]: {escape(job.reason or '')}"
        )
        for line in lines:
            render.console.print(f"  [dim]|[/] {escape(line)}")


@click.command("run")
@click.option("--job", "job", help="Run only this job (its needs are assumed done: CI mode).")
@click.option("--until", "until", help="Run this job and everything it needs.")
@click.option("--var", "variables", multiple=True, help="KEY=VALUE, overrides pipeline vars.")
@click.option("--branch", help="Branch the conditions see (default: from git / the CI host).")
@click.option("--json", "as_json", is_flag=True, help="Print the run result as JSON.")
@click.pass_obj
@handled
def run_command(
    ctx: Context,
    job: str | None,
    until: str | None,
    variables: tuple[str, ...],
    branch: str | None,
    as_json: bool,
) -> None:
    """Run the pipeline here: its DAG with bounded parallelism, fail-fast, cached, masked."""
    if job and until:
        raise PipelineError("--job and --until cannot be combined", hint="pick one")
    spec, root = _pipeline(ctx)
    if job:
        spec = only_job(spec, job)
    elif until:
        spec = until_job(spec, until)
    plan = build_plan(spec)
    context = git_context(root, branch, _parse_vars(variables))
    view = _View(plan)
    run_id = new_run_id()
    actions = ProjectActions(
        ctx.project(),
        run_id,
        context,
        commit=_git(root, "rev-parse", "HEAD"),
    )
    actions.started([job.name for job in plan.jobs])
    runner = _WatchedRunner(
        plan, root, context=context, cache_dir=root / ".conveyor" / "cache", actions=actions
    )
    runner.view = view
    live = not as_json and render.console.is_terminal
    if live:
        with Live(view, console=render.console, refresh_per_second=4) as screen:
            result = asyncio.run(runner.run())
            view.done = {job.name: job for job in result.jobs}  # skips never reach _job
            screen.refresh()
    else:
        result = asyncio.run(runner.run())
    try:
        actions.finished(result)
    finally:
        actions.close()
    extra = {"id": run_id, "artifacts": actions.built, "problems": actions.problems}
    record = store_run(root, result, context, run_id, extra)
    if as_json:
        render.emit_json({"id": run_id, **result.to_dict()})
    else:
        view.done = {job.name: job for job in result.jobs}
        if not live:
            render.console.print(view.table())
        _print_failures(result)
        for problem in actions.problems:
            render.console.print(f"[yellow]warning[/]: {escape(problem)}")
        style = "green" if result.result == "success" else "red"
        render.console.print(
            f"[{style}]pipeline {result.result}[/] in {result.duration:.1f}s "
            f"[dim](record: {escape(str(record.relative_to(root)))})[/]"
        )
    if result.result != "success":
        sys.exit(1)


@click.command("export")
@click.argument("kind", type=click.Choice(FORMATS))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--install", default=DEFAULT_INSTALL, show_default=True, help="Install step.")
@click.pass_obj
@handled
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
    render.console.print(f"wrote {escape(str(output))} ({len(spec.jobs)} jobs)")


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
@click.pass_obj
@handled
def init_command(ctx: Context, template: Path, service: str) -> None:
    """Create SERVICE/conveyor.yaml whose pipeline extends a shared template."""
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
        load_project(config)
        spec = load_pipeline(config)
    except ConveyorError:
        config.unlink()
        if created:
            target.rmdir()
        raise
    jobs = ", ".join(spec.jobs) if spec is not None else ""
    render.console.print(f"created {escape(str(config))} (jobs: {escape(jobs)})")


def add_commands(group: click.Group) -> None:
    from conveyor.cli.evidence_commands import evidence_command

    group.add_command(run_command)
    group.add_command(export_command)
    group.add_command(init_command)
    group.add_command(evidence_command)
