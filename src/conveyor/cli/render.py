"""Human output for the CLI (rich); `--json` bypasses all of it.

rich costs ~20 ms to import, as much as the rest of a server-talking command's own work, so
this module imports it only inside the functions that print: `--version`, `--help` and every
`--json` answer never load it, and a command about to wait for the server can have it
imported meanwhile (``preload``). The consoles are made once, on first use.

Anything that came from a user or the server (names, messages, actors, reasons) can hold
square brackets, which rich would read as markup and either swallow or fail on: every such
value goes through ``esc`` before it is put into a markup string, and table cells are
``Text`` objects, which rich never parses (and draws faster: `conveyor status` of 36
services spends more time drawing its table than waiting for the server).
"""

from __future__ import annotations

import functools
import json
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from conveyor.errors import ConfigError, ConveyorError

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

PHASE_STYLE = {
    "succeeded": "green",
    "rolled_back": "yellow",
    "failed": "red",
    "rolling_back": "yellow",
    "progressing": "cyan",
    "verifying": "cyan",
    "pending": "dim",
    "pending_approval": "magenta",
    "rejected": "red",
    "cancelled": "yellow",
}
STATUS_COLUMNS = (
    "service",
    "env",
    "rev",
    "version",
    "artifact",
    "config",
    "ready",
    "rollout",
    "address",
)
JOB_STYLE = {
    "success": "green",
    "failure": "red",
    "cancelled": "yellow",
    "skipped": "dim",
    "running": "cyan",
    "pending": "dim",
}


_preloading: threading.Thread | None = None


def preload() -> None:
    """Import rich on a thread while the caller waits for the server.

    A command that prints a table spends ~20 ms importing rich and ~20 ms waiting for the
    API's answer, one after the other; the wait is spent in ``recv`` with the GIL released,
    so the import can run in it. Every function here that needs rich first waits for the
    thread (``_loaded``): two threads importing the same package at once can each hold a
    module the other needs. Not a daemon thread, so an import is never cut short at exit.
    """
    global _preloading
    if _preloading is None:
        _preloading = threading.Thread(target=_import_rich, name="conveyor-preload")
        _preloading.start()


def _import_rich() -> None:
    import rich.console
    import rich.markup
    import rich.table  # noqa: F401


def _loaded() -> None:
    if _preloading is not None:
        _preloading.join()


@functools.cache
def out() -> Console:
    return _console(stderr=False)


@functools.cache
def err() -> Console:
    return _console(stderr=True)


def _console(stderr: bool) -> Console:
    """Wide and unwrapped when piped: file:line locations and digests must stay whole."""
    _loaded()
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    piped = not stream.isatty()
    return Console(stderr=stderr, highlight=False, soft_wrap=piped, width=160 if piped else None)


def esc(value: object) -> str:
    """``value`` as text that rich prints literally."""
    _loaded()
    from rich.markup import escape

    return escape(str(value))


def emit_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


def error(exc: ConveyorError) -> None:
    console = err()
    if isinstance(exc, ConfigError):
        console.print(f"[bold red]error:[/] {len(exc.problems)} problem(s) in the config")
        for p in exc.problems:
            where = esc(p.file if p.line is None else f"{p.file}:{p.line}")
            console.print(f"  [bold]{where}[/]  [cyan]{esc(p.field)}[/]: {esc(p.message)}")
            if p.hint:
                console.print(f"      [dim]hint:[/] {esc(p.hint)}")
        return
    console.print(f"[bold red]error:[/] {esc(exc.message)}")
    if exc.hint:
        console.print(f"[dim]hint:[/] {esc(exc.hint)}")


def phase(value: str) -> str:
    return f"[{PHASE_STYLE.get(value, 'white')}]{esc(value)}[/]"


def job_state(value: str) -> str:
    return f"[{JOB_STYLE.get(value, 'white')}]{esc(value)}[/]"


def short_digest(digest: str | None) -> str:
    return (digest or "-").removeprefix("sha256:")[:12]


def when(at: object, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    """Unix seconds as local time; anything else as ``?``."""
    if not isinstance(at, int | float):
        return "?"
    return time.strftime(fmt, time.localtime(at))


def status_table(rows: Sequence[Mapping[str, Any]]) -> Table:
    _loaded()
    from rich.table import Table
    from rich.text import Text

    table = Table(title="what runs where", title_justify="left", expand=False)
    for column in STATUS_COLUMNS:
        table.add_column(column, no_wrap=column != "rollout")
    for row in rows:
        rollout = Text()
        if row["rollout_revision"] and row["rollout_revision"] != row["revision"]:
            rollout.append(f"r{row['rollout_revision']} ")
        rollout.append(str(row["phase"]), style=PHASE_STYLE.get(row["phase"], "white"))
        if row.get("step"):
            rollout.append(f" step {row['step']}, {row['canary_percent']}% on canary")
        message = str(row.get("message") or "")
        if row["phase"] != "succeeded" or "warm" in message:
            rollout.append(f"\n{message}", style="dim")
        for line in analysis_lines(row.get("analysis") or {}, message):
            rollout.append(f"\n{line}", style="dim")
        for review in row.get("open_reviews") or ():
            rollout.append(
                f"\nr{review['revision']} emergency review open: conveyor review {review['id']}",
                style="bold yellow",
            )
        ready = row["ready"] >= row["desired"]
        table.add_row(
            Text(str(row["service"])),
            Text(str(row["env"])),
            Text(f"r{row['revision']}" if row["revision"] else "-"),
            Text(str(row["version"] or "-")),
            Text(short_digest(row["artifact"])),
            Text(str(row["config_version"] or "-")),
            Text(f"{row['ready']}/{row['desired']}", style="" if ready else "yellow"),
            rollout,
            Text(str(row["address"] or "-")),
        )
    return table


def analysis_lines(verdicts: Mapping[str, Any], message: str) -> list[str]:
    """One line per analysis run, leaving out what the rollout's message already says (a
    canary held on an analysis names it there: once is enough)."""
    return [
        f"analysis {key}: {verdict}"
        for key, verdict in verdicts.items()
        if not verdict or str(verdict) not in message
    ]


def history_table(releases: Sequence[Mapping[str, Any]]) -> Table:
    _loaded()
    from rich.table import Table
    from rich.text import Text

    table = Table(title_justify="left")
    for column in ("rev", "phase", "artifact", "config", "when", "by", "why"):
        table.add_column(column)
    for r in releases:
        status = r.get("status") or {}
        why = str(r.get("reason") or "")
        abort = status.get("abort")
        if abort:
            why += f" — {abort['reason']}: {abort['message']}"
        table.add_row(
            Text(f"r{r['revision']}"),
            Text(str(r["phase"]), style=PHASE_STYLE.get(r["phase"], "white")),
            Text(short_digest(r["artifact_digest"])),
            Text(str(r["config_version"])),
            Text(when(r["created_at"])),
            Text(str(r["actor"])),
            Text(why),
        )
    return table


def events_table(events: Sequence[Mapping[str, Any]]) -> Table:
    """The ledger as people read it: local time, where, what happened, in words, who."""
    _loaded()
    from rich.table import Table
    from rich.text import Text

    table = Table(expand=False)
    for column in ("time", "where", "event", "what", "who"):
        table.add_column(column, no_wrap=column in ("time", "event"))
    for event in events:
        where = f"{event['service'] or ''}/{event['env'] or ''}".strip("/") or "-"
        table.add_row(
            Text(when(event["at"]), style="dim"),
            Text(where),
            Text(str(event["kind"]), style="bold"),
            Text(summarize(event["kind"], event["details"])),
            Text(str(event["actor"]), style="dim"),
        )
    return table


def event_line(event: Mapping[str, Any], start: float | None = None) -> str:
    at = event["at"]
    stamp = f"+{at - start:6.2f}s" if start is not None else when(at, "%H:%M:%S")
    summary = esc(summarize(event["kind"], event["details"]))
    return f"[dim]{stamp}[/] [bold]{esc(event['kind'])}[/] {summary}"


def weights_text(details: Mapping[str, Any]) -> str:
    """``r4 20%, r3 80%``: the revisions users are split between (template keys without one)."""
    weights = details.get("weights") or {}
    revisions = details.get("revisions") or {}
    total = sum(w for w in weights.values() if isinstance(w, int | float)) or 1
    parts = [f"r{revisions[key]}" if key in revisions else str(key)[:11] for key in weights]
    shares = [
        f"{name} {round(100 * weights[key] / total)}%"
        for name, key in zip(parts, weights, strict=True)
    ]
    return "users: " + (", ".join(shares) if shares else "none")


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
        return weights_text(details) + (" (rollback)" if details.get("rollback") else "")
    if kind == "release.aborted":
        return f"{details.get('reason')}: {details.get('message')}"
    if kind in ("release.rolled_back", "release.failed", "release.succeeded"):
        return str(details.get("message") or f"in {details.get('duration_seconds')}s")
    if kind == "rollout.started":
        return f"{details.get('strategy')} to {details.get('desired')} instance(s)"
    if kind == "migration.started":
        return f"`{details.get('command')}`, lock_timeout {details.get('lock_timeout')}s"
    if kind.startswith("migration."):
        return (
            f"{details.get('migration') or ''} {details.get('result')} in {details.get('seconds')}s"
        )
    if kind == "approval.requested":
        who = f" from {', '.join(details['from'])}" if details.get("from") else ""
        return f"waits for {details.get('required')} approval(s){who}"
    if kind in ("approval.approved", "approval.rejected"):
        page = f", page {short_digest(details['page'])}" if details.get("page") else ""
        comment = f": {details['comment']}" if details.get("comment") else ""
        return f"content {short_digest(details.get('content'))}{page}{comment}"
    if kind in ("release.rejected", "release.expired", "release.cancelled"):
        return str(details.get("message") or kind)
    if kind == "release.approved":
        return "approved by " + ", ".join(details.get("approvals") or [])
    if kind == "emergency.override":
        return f"approval and windows skipped: {details.get('reason')}"
    if kind == "emergency.reviewed":
        return f"reviewed: {details.get('comment')}"
    return ", ".join(f"{k}={v}" for k, v in details.items() if not isinstance(v, (dict, list)))
