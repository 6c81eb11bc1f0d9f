"""`conveyor evidence`: what a pipeline run or a release was checked for, and the results.

A run is read from its record under `.conveyor/runs/`; a release from the store, with its
artifact re-verified now (``controller.evidence``). One command for both, because the
question is the same: "what do we know about this, and how do we know it".
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.markup import escape
from rich.table import Table

from conveyor.cli import render
from conveyor.cli.pipeline_commands import STATE_STYLE, handled
from conveyor.config.loader import LoadedProject
from conveyor.errors import ConveyorError

if TYPE_CHECKING:
    from conveyor.cli.main import Context


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
@handled
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
    store = Store.open(default_url(project.root))
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
