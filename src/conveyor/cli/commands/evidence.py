"""`conveyor evidence`: what a pipeline run or a release was checked for, and the results.

One command for both, because the question is the same: "what do we know about this, and
how do we know it". A run is read from its record under `.conveyor/runs/` (it stays where
the pipeline ran); a release is asked of the server (``GET /api/v1/evidence``), which
re-verifies its artifact now. A reference that names no run record is a release reference.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from conveyor.cli import render
from conveyor.cli.context import Context
from conveyor.cli.options import json_option, pass_ctx
from conveyor.cli.runs import evidence_summary, find_run, read_run
from conveyor.errors import ConveyorError, InvalidInput, NotFound, ServerUnavailable
from conveyor.layout import Layout

RELEASE_FORMS = "an id, SERVICE/ENV, SERVICE/ENV@N, SERVICE/ENV@rN or 'SERVICE/ENV rN'"


@click.command("evidence")
@click.argument("reference", default="latest")
@json_option
@pass_ctx
def evidence(ctx: Context, reference: str, as_json: bool) -> None:
    """Show what was checked and the results, of a pipeline run or of a release.

    REFERENCE: a run record's name or 'latest' (the default); or a release: its id,
    SERVICE/ENV (the newest there), SERVICE/ENV@N, SERVICE/ENV@rN or 'SERVICE/ENV rN'.
    """
    layout = ctx.layout
    path = _run_record(layout, reference)
    if path is None:
        report = _release_evidence(ctx, reference)
        if as_json:
            render.emit_json(report)
        else:
            _print_release_evidence(report)
        return
    summary = evidence_summary(read_run(path), path.stem)
    if as_json:
        render.emit_json(summary)
    else:
        _print_run_evidence(summary)


def _run_record(layout: Layout, reference: str) -> Path | None:
    """The run record ``reference`` names, if it names one; 'latest' with no runs raises."""
    if reference == "latest":
        return find_run(layout, reference)
    if "/" in reference or not reference.strip():
        return None  # run names never hold a slash; SERVICE/ENV is a release
    try:
        return find_run(layout, reference)
    except ConveyorError:
        return None


def _could_be_a_run(reference: str) -> bool:
    return "/" not in reference and not reference.startswith("@") and not reference.isdigit()


def _release_evidence(ctx: Context, reference: str) -> dict[str, Any]:
    """The server's evidence report; a name that is neither a run nor a release says both."""
    try:
        report: dict[str, Any] = ctx.client().get("/api/v1/evidence", release=reference)
    except (InvalidInput, NotFound, ServerUnavailable) as error:
        if not _could_be_a_run(reference):
            raise
        try:
            find_run(ctx.layout, reference)
        except ConveyorError as missing:
            if isinstance(error, ServerUnavailable):
                release = "no server is running to look for a release by that name"
            else:
                release = f"'{reference}' is not a release either"
            raise ConveyorError(
                f"{missing.message}; {release}",
                hint=f"{missing.hint}; or name a release as {RELEASE_FORMS}",
            ) from None
        raise
    return report


def _print_run_evidence(summary: Mapping[str, Any]) -> None:
    from rich.table import Table

    console = render.out()
    style = "green" if summary["result"] == "success" else "red"
    console.print(
        f"run {render.esc(summary['run'])}: [{style}]{render.esc(summary['result'])}[/] "
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
        table.add_row(
            render.esc(job["name"]),
            render.job_state(job["result"]),
            f"{job['duration']:.1f}s",
            str(job["attempts"]),
            render.esc("\n".join(notes)),
        )
    console.print(table)


def _verdict(ok: bool, good: str, problem: str | None) -> str:
    return f"[green]{good}[/]" if ok else f"[red]FAILED[/] {render.esc(problem or '')}"


def _print_release_evidence(evidence: Mapping[str, Any]) -> None:
    esc = render.esc
    out = render.out().print
    release, artifact = evidence["release"], evidence["artifact"]
    message = release["message"] if release["message"] != release["phase"] else None
    out(
        f"[bold]release {esc(release['name'])}[/] (#{release['id']}): "
        f"{render.phase(release['phase'])} [dim]{esc(message or '')}[/]"
    )
    out(
        f"  {esc(release['reason'])} by {esc(release['actor'])} at "
        f"{render.when(release['created_at'])}, config {esc(release['config_version'])}"
    )
    tree = {True: "dirty", False: "clean", None: "unknown tree"}[artifact["dirty"]]
    out(f"\n[bold]artifact[/] {esc(artifact['digest'])}")
    out(
        f"  commit {esc(artifact['commit'] or 'unknown')} "
        f"on branch {esc(artifact['branch'] or 'unknown')} "
        f"({tree}), built with `{esc(artifact['build_command'])}` "
        f"at {render.when(artifact['created_at'])}"
    )
    integrity = evidence["integrity"]
    out("  bytes: " + _verdict(integrity["bytes_ok"], "intact", integrity["bytes_problem"]))
    signed = f"verified, signed by {integrity['signed_by']}"
    out(
        "  signature: "
        + _verdict(integrity["signature_ok"], esc(signed), integrity["signature_problem"])
    )
    provenance = evidence["provenance"]
    if provenance is not None:
        run = provenance["pipeline_run"]
        out(
            f"\n[bold]provenance[/] built by {esc(provenance['builder'])} "
            f"{esc(provenance['builder_version'])} from commit "
            f"{esc(provenance['commit'] or 'unknown')}"
            + (f", in pipeline run {esc(run)}" if run else ", outside a pipeline run")
        )
    _print_checks(evidence)
    _print_migrations(evidence.get("migrations"))
    requirements = evidence["requirements"]
    out("\n[bold]requirements[/] (evaluated now, not at deploy time)")
    if requirements["problem"]:
        out(f"  [yellow]cannot evaluate[/]: {esc(requirements['problem'])}")
    elif not any(requirements["declared"].values()):
        out("  none declared")
    elif not requirements["unmet"]:
        out("  [green]all met[/]")
    for unmet in requirements["unmet"]:
        out(f"  [red]unmet[/]: {esc(unmet)}")
    out("\n[bold]rollout events[/]")
    for event in evidence["events"]:
        out(f"  #{event['seq']} " + render.event_line(event))


def _print_checks(evidence: Mapping[str, Any]) -> None:
    from rich.table import Table

    esc = render.esc
    console = render.out()
    attestations = evidence["attestations"]
    console.print("\n[bold]checks[/] (signed pipeline-run attestations)")
    if attestations["problem"]:
        console.print(f"  [red]cannot verify[/]: {esc(attestations['problem'])}")
    if not attestations["runs"]:
        console.print("  no attested pipeline run")
    else:
        table = Table(show_edge=False, pad_edge=False)
        for column in ("run", "branch", "recorded", "job", "result", "evidence"):
            table.add_column(column)
        for run in attestations["runs"]:
            for job in run["jobs"]:
                note = job["summary"] or job["reason"] or ""
                if job["gate"]:
                    note = f"gate {job['gate']}: {note}"
                table.add_row(
                    esc(run["run"]),
                    esc(run["branch"]),
                    render.when(run["recorded"]),
                    esc(job["name"]),
                    render.job_state(str(job["result"])),
                    esc(note),
                )
        console.print(table)
    if attestations["rejected"]:
        console.print(
            f"  [yellow]{attestations['rejected']} attestation line(s) failed verification "
            "and were ignored[/]"
        )
    gates = evidence["gates"]
    if gates:
        merged = ", ".join(f"{name} {result}" for name, result in sorted(gates.items()))
        console.print(f"  gate results (newest run wins): {esc(merged)}")


def _print_migrations(report: Mapping[str, Any] | None) -> None:
    """The release's schema migrations: class and why, undo, squawk's findings."""
    if report is None:
        return
    esc = render.esc
    out = render.out().print
    step = (
        f"`{esc(str(report['command']))}` before new instances start (lock_timeout "
        f"{report['lock_timeout']:g}s, statement_timeout {report['statement_timeout']:g}s)"
        if report["runs"]
        else "not run: a rollback never migrates"
    )
    out(f"\n[bold]migrations[/] {step}")
    if not report["migrations"]:
        out("  none in the artifact")
    for m in report["migrations"]:
        said = f"declared {m['declared']}" if m["declared"] else "inferred"
        extra = f", completes {', '.join(m['completes'])}" if m["completes"] else ""
        undo = (
            f", undo {m['undo']}"
            if m["undo"]
            else (", [red]no undo[/]" if m["class"] == "expand" else "")
        )
        out(f"  {esc(m['file'])}: [bold]{esc(m['class'])}[/] ({said}{esc(extra)}){undo}")
        for why in m["why"][:3]:
            out(f"    [dim]{esc(why)}[/]")
        for f in m["lint"] or []:
            style = "red" if f["level"] == "error" else "yellow"
            fix = f" — {f['help']}" if f["help"] else ""
            what = esc(f"{f['rule']}: {f['message']}{fix}")
            out(f"    [{style}]{f['level']}[/] line {f['line']} {what}")
    if report.get("lint_note"):
        out(f"  [dim]{esc(report['lint_note'])}[/]")
