"""`conveyor run` and `conveyor export`: the pipeline from a shell, a laptop or a CI host.

The same `conveyor run --job X` is what an exported workflow calls, so a pipeline behaves
the same everywhere. Where a run happens (branch, tag, changed paths) comes from git, then
from the CI host's variables (CI checkouts are often a detached HEAD), and `--branch`
overrides both. Every run leaves its result as JSON under `.conveyor/runs/`: the evidence
that the ledger will later point at, and what `conveyor evidence` reads back.

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
from conveyor.config.loader import LoadedProject, load_project
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


def _handled(fn: F) -> F:
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
@_handled
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
        database_url=os.environ.get("CONVEYOR_DATABASE_URL"),
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
    actions.finished(result)
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


def find_run(root: Path, run_id: str) -> Path:
    """``latest`` or a record's name (with or without ``.json``) under ``.conveyor/runs/``."""
    runs = root / ".conveyor" / "runs"
    records = sorted(runs.glob("*.json")) if runs.is_dir() else []
    if run_id == "latest":
        if not records:
            raise ConveyorError(
                f"no pipeline runs recorded under {runs}", hint="run the pipeline: conveyor run"
            )
        return records[-1]
    name = run_id if run_id.endswith(".json") else f"{run_id}.json"
    path = runs / Path(name).name
    if not path.is_file():
        known = ", ".join(p.stem for p in records[-3:]) or "none"
        raise ConveyorError(
            f"no pipeline run {run_id!r} under {runs}",
            hint=f"pass 'latest' or a record name (most recent: {known})",
        )
    return path


def evidence_summary(record: Mapping[str, Any], name: str) -> dict[str, Any]:
    """What each job was checked for and how it went; logs and outputs are left out."""
    run = record.get("run", {})
    jobs: list[dict[str, Any]] = []
    for job in run.get("jobs", []):
        junit = job.get("reports") or []
        entry: dict[str, Any] = {
            "name": job["name"],
            "result": job["result"],
            "reason": job.get("reason"),
            "duration": round(float(job.get("duration", 0.0)), 3),
            "attempts": len(job.get("attempts") or []),
            "junit": {
                key: sum(int(report.get(key, 0)) for report in junit)
                for key in ("tests", "failures", "errors", "skipped")
            }
            if junit
            else None,
            "coverage": [c.get("percent") for c in job.get("coverage") or []] or None,
            "gate": job.get("gate"),
        }
        jobs.append(entry)
    return {
        "run": name,
        "result": run.get("result"),
        "duration": run.get("duration"),
        "context": record.get("context", {}),
        "jobs": jobs,
    }


def _print_evidence(summary: Mapping[str, Any]) -> None:
    style = "green" if summary["result"] == "success" else "red"
    render.console.print(
        f"run {escape(summary['run'])}: [{style}]{summary['result']}[/] "
        f"in {float(summary['duration'] or 0):.1f}s"
    )
    table = Table(show_edge=False, pad_edge=False)
    for column in ("job", "result", "time", "attempts", "evidence"):
        table.add_column(column)
    for job in summary["jobs"]:
        notes: list[str] = []
        if job["junit"]:
            counts = job["junit"]
            notes.append(
                f"junit {counts['tests']} tests, {counts['failures']} failures, "
                f"{counts['errors']} errors"
            )
        if job["coverage"]:
            notes.append("coverage " + ", ".join(f"{p}%" for p in job["coverage"]))
        gate = job["gate"]
        if gate:
            notes.append(f"gate {gate['gate']}: {gate['summary']}")
            notes += [f"  {f['file']}:{f['line']} {f['detector']}" for f in gate["findings"]]
        elif job["reason"]:
            notes.append(job["reason"])
        state = STATE_STYLE.get(job["result"], "white")
        table.add_row(
            escape(job["name"]),
            f"[{state}]{job['result']}[/]",
            f"{job['duration']:.1f}s",
            str(job["attempts"]),
            escape("\n".join(notes)),
        )
    render.console.print(table)


@click.command("evidence")
@click.argument("reference", default="latest")
@click.option("--json", "as_json", is_flag=True, help="Print the evidence as JSON.")
@click.pass_obj
@_handled
def evidence_command(ctx: Context, reference: str, as_json: bool) -> None:
    """Show what was checked and the results, of a pipeline run or of a release.

    REFERENCE: a run record's name or 'latest' (the default); or a release: its id,
    SERVICE/ENV (the newest there), SERVICE/ENV@N, SERVICE/ENV@rN or 'SERVICE/ENV rN'.
    """
    project = ctx.project()
    path = _run_record(project.root, reference)
    if path is None:
        evidence = _release_evidence(project, reference)
        if as_json:
            render.emit_json(evidence)
        else:
            _print_release_evidence(evidence)
        return
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ConveyorError(
            f"run record {path} is unreadable: {error}", hint="pick another run"
        ) from None
    summary = evidence_summary(record, path.stem)
    if as_json:
        render.emit_json(summary)
    else:
        _print_evidence(summary)


def _run_record(root: Path, reference: str) -> Path | None:
    """The run record ``reference`` names, if it names one; 'latest' with no runs raises."""
    if reference == "latest":
        return find_run(root, reference)
    if "/" in reference or not reference.strip():
        return None  # run names never hold a slash; SERVICE/ENV is a release
    try:
        return find_run(root, reference)
    except ConveyorError:
        return None


def _release_evidence(project: LoadedProject, reference: str) -> dict[str, Any]:
    # Imported here: the store pulls in SQLAlchemy, which run and export never need.
    from conveyor.artifacts.store import ArtifactStore
    from conveyor.controller.evidence import (
        REFERENCE_FORMS,
        find_release,
        parse_release_reference,
        release_evidence,
    )
    from conveyor.store.engine import default_url
    from conveyor.store.repository import Store

    if parse_release_reference(reference) is None:
        try:
            find_run(project.root, reference)
        except ConveyorError as missing:
            raise ConveyorError(
                f"{missing.message}; '{reference}' is not a release either",
                hint=f"{missing.hint}; or name a release as {REFERENCE_FORMS}",
            ) from None
    store = Store.open(os.environ.get("CONVEYOR_DATABASE_URL") or default_url(project.root))
    try:
        release = find_release(store, reference)
        return release_evidence(project, store, ArtifactStore(project.root), release)
    finally:
        store.close()


def _when(at: object) -> str:
    if not isinstance(at, int | float):
        return "?"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))


def _verdict(ok: bool, good: str, problem: str | None) -> str:
    return f"[green]{good}[/]" if ok else f"[red]FAILED[/] {escape(problem or '')}"


def _print_release_evidence(evidence: Mapping[str, Any]) -> None:
    out = render.console.print
    release, artifact = evidence["release"], evidence["artifact"]
    message = release["message"] if release["message"] != release["phase"] else None
    out(
        f"[bold]release {escape(release['name'])}[/] (#{release['id']}): "
        f"{render.phase(release['phase'])} [dim]{escape(str(message or ''))}[/]"
    )
    out(
        f"  {escape(str(release['reason']))} by {escape(release['actor'])} at "
        f"{_when(release['created_at'])}, config {escape(release['config_version'])}"
    )
    tree = {True: "dirty", False: "clean", None: "unknown tree"}[artifact["dirty"]]
    out(f"\n[bold]artifact[/] {escape(artifact['digest'])}")
    out(
        f"  commit {escape(artifact['commit'] or 'unknown')} "
        f"on branch {escape(artifact['branch'] or 'unknown')} "
        f"({tree}), built with `{escape(artifact['build_command'])}` "
        f"at {_when(artifact['created_at'])}"
    )
    integrity = evidence["integrity"]
    out("  bytes: " + _verdict(integrity["bytes_ok"], "intact", integrity["bytes_problem"]))
    signed = f"verified, signed by {integrity['signed_by']}"
    out(
        "  signature: "
        + _verdict(integrity["signature_ok"], escape(signed), integrity["signature_problem"])
    )
    provenance = evidence["provenance"]
    if provenance is not None:
        run = provenance["pipeline_run"]
        out(
            f"\n[bold]provenance[/] built by {escape(str(provenance['builder']))} "
            f"{escape(str(provenance['builder_version']))} from commit "
            f"{escape(str(provenance['commit'] or 'unknown'))}"
            + (f", in pipeline run {escape(str(run))}" if run else ", outside a pipeline run")
        )
    _print_checks(evidence)
    requirements = evidence["requirements"]
    out("\n[bold]requirements[/] (evaluated now, not at deploy time)")
    if requirements["problem"]:
        out(f"  [yellow]cannot evaluate[/]: {escape(requirements['problem'])}")
    elif not any(requirements["declared"].values()):
        out("  none declared")
    elif not requirements["unmet"]:
        out("  [green]all met[/]")
    for unmet in requirements["unmet"]:
        out(f"  [red]unmet[/]: {escape(unmet)}")
    out("\n[bold]rollout events[/]")
    for event in evidence["events"]:
        out(f"  #{event['seq']} " + render.event_line(event))


def _print_checks(evidence: Mapping[str, Any]) -> None:
    attestations = evidence["attestations"]
    render.console.print("\n[bold]checks[/] (signed pipeline-run attestations)")
    if attestations["problem"]:
        render.console.print(f"  [red]cannot verify[/]: {escape(attestations['problem'])}")
    if not attestations["runs"]:
        render.console.print("  no attested pipeline run")
    else:
        table = Table(show_edge=False, pad_edge=False)
        for column in ("run", "branch", "recorded", "job", "result", "evidence"):
            table.add_column(column)
        for run in attestations["runs"]:
            for job in run["jobs"]:
                note = job["summary"] or job["reason"] or ""
                if job["gate"]:
                    note = f"gate {job['gate']}: {note}"
                state = STATE_STYLE.get(str(job["result"]), "white")
                table.add_row(
                    escape(str(run["run"])),
                    escape(str(run["branch"])),
                    _when(run["recorded"]),
                    escape(str(job["name"])),
                    f"[{state}]{escape(str(job['result']))}[/]",
                    escape(note),
                )
        render.console.print(table)
    if attestations["rejected"]:
        render.console.print(
            f"  [yellow]{attestations['rejected']} attestation line(s) failed verification "
            "and were ignored[/]"
        )
    gates = evidence["gates"]
    if gates:
        merged = ", ".join(f"{name} {result}" for name, result in sorted(gates.items()))
        render.console.print(f"  gate results (newest run wins): {escape(merged)}")


@click.command("export")
@click.argument("kind", type=click.Choice(FORMATS))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--install", default=DEFAULT_INSTALL, show_default=True, help="Install step.")
@click.pass_obj
@_handled
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
@_handled
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
    group.add_command(run_command)
    group.add_command(export_command)
    group.add_command(init_command)
    group.add_command(evidence_command)
