"""Human output for the CLI (rich); `--json` bypasses all of it."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from conveyor.errors import ConfigError, ConveyorError


def _console(stderr: bool = False) -> Console:
    """Wide and unwrapped when piped: file:line locations and digests must stay whole."""
    stream = sys.stderr if stderr else sys.stdout
    piped = not stream.isatty()
    return Console(stderr=stderr, highlight=False, soft_wrap=piped, width=160 if piped else None)


console = _console()
err_console = _console(stderr=True)

PHASE_STYLE = {
    "succeeded": "green",
    "rolled_back": "yellow",
    "failed": "red",
    "rolling_back": "yellow",
    "progressing": "cyan",
    "verifying": "cyan",
    "pending": "dim",
}


def emit_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


def error(exc: ConveyorError) -> None:
    if isinstance(exc, ConfigError):
        err_console.print(f"[bold red]error:[/] {len(exc.problems)} problem(s) in the config")
        for p in exc.problems:
            where = escape(p.file if p.line is None else f"{p.file}:{p.line}")
            err_console.print(
                f"  [bold]{where}[/]  [cyan]{escape(p.field)}[/]: {escape(p.message)}"
            )
            if p.hint:
                err_console.print(f"      [dim]hint:[/] {escape(p.hint)}")
        return
    err_console.print(f"[bold red]error:[/] {escape(exc.message)}")
    if exc.hint:
        err_console.print(f"[dim]hint:[/] {escape(exc.hint)}")


def phase(value: str) -> str:
    return f"[{PHASE_STYLE.get(value, 'white')}]{value}[/]"


def short_digest(digest: str | None) -> str:
    return (digest or "-").removeprefix("sha256:")[:12]


def status_table(rows: Sequence[Mapping[str, Any]]) -> Table:
    table = Table(title="what runs where", title_justify="left", expand=False)
    for column in (
        "service",
        "env",
        "rev",
        "version",
        "artifact",
        "config",
        "ready",
        "rollout",
        "address",
    ):
        table.add_column(column, no_wrap=column != "rollout")
    for row in rows:
        rollout = phase(row["phase"])
        if row["rollout_revision"] and row["rollout_revision"] != row["revision"]:
            rollout = f"r{row['rollout_revision']} {rollout}"
        if row.get("step"):
            rollout += f" step {row['step']}, {row['canary_percent']}% on canary"
        if row["phase"] not in ("succeeded",) or "warm" in row["message"]:
            rollout += f"\n[dim]{escape(row['message'])}[/]"
        for key, verdict in (row.get("analysis") or {}).items():
            rollout += f"\n[dim]analysis {escape(key)}: {escape(str(verdict))}[/]"
        ready = f"{row['ready']}/{row['desired']}"
        table.add_row(
            row["service"],
            row["env"],
            f"r{row['revision']}" if row["revision"] else "-",
            row["version"] or "-",
            short_digest(row["artifact"]),
            row["config_version"] or "-",
            ready if row["ready"] >= row["desired"] else f"[yellow]{ready}[/]",
            rollout,
            row["address"],
        )
    return table


def history_table(releases: Sequence[Mapping[str, Any]]) -> Table:
    table = Table(title_justify="left")
    for column in ("rev", "phase", "artifact", "config", "when", "by", "why"):
        table.add_column(column)
    for r in releases:
        status = r.get("status") or {}
        why = r.get("reason") or ""
        abort = status.get("abort")
        if abort:
            why += f" — {abort['reason']}: {abort['message']}"
        table.add_row(
            f"r{r['revision']}",
            phase(r["phase"]),
            short_digest(r["artifact_digest"]),
            r["config_version"],
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["created_at"])),
            r["actor"],
            why,
        )
    return table


def event_line(event: Mapping[str, Any], start: float | None = None) -> str:
    at = event["at"]
    stamp = (
        f"+{at - start:6.2f}s"
        if start is not None
        else time.strftime("%H:%M:%S", time.localtime(at))
    )
    summary = escape(summarize(event["kind"], event["details"]))
    return f"[dim]{stamp}[/] [bold]{event['kind']}[/] {summary}"


def summarize(kind: str, details: Mapping[str, Any]) -> str:
    """One readable line per ledger event; the full details stay in `--json`."""
    if kind == "release.created":
        artifact = short_digest(details.get("artifact"))
        return (
            f"artifact {artifact} config {details.get('config_version')} ({details.get('reason')})"
        )
    if kind in ("instances.started", "instances.stopped", "instance.ready"):
        ids = details.get("instances") or []
        extra = f" ({details['why']})" if details.get("why") else ""
        return f"{len(ids) if ids else details.get('count', '')} instance(s){extra}"
    if kind in ("traffic.switched", "traffic.shifted"):
        return f"weights {details.get('weights')}" + (
            " (rollback)" if details.get("rollback") else ""
        )
    if kind == "verification.failed":
        return f"{details.get('reason')}: {details.get('message')}"
    if kind in ("release.rolled_back", "release.failed", "release.succeeded"):
        return str(details.get("message") or f"in {details.get('duration_seconds')}s")
    if kind == "rollout.started":
        return f"{details.get('strategy')} to {details.get('desired')} instance(s)"
    return ", ".join(f"{k}={v}" for k, v in details.items() if not isinstance(v, (dict, list)))
