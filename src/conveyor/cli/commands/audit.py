"""`conveyor audit export`: who did what, when, why, with which evidence, for one period.

The server writes the export (``GET /api/v1/audit``, application/audit.py): one record per
ledger event an auditor asks about — releases, approvals with the hash of the page the
person was shown, emergency overrides and their reviews, refusals, rollbacks, token, key
and access-policy changes — and, last, whether the ledger verifies. The command streams it
to stdout or to a file that only its owner can read (0600: who deployed what is nobody
else's business), and says on stderr whether the ledger verified; a broken ledger exits 14,
as `conveyor ledger verify` does, so a scheduled export cannot hide one.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from conveyor.cli import render
from conveyor.cli.client import Sink
from conveyor.cli.context import Context
from conveyor.cli.options import json_option, pass_ctx
from conveyor.errors import UsageError

EXIT_BROKEN = 14
_AGO = re.compile(r"(?P<amount>\d+(?:\.\d+)?)\s*(?P<unit>[smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
TIME_HINT = (
    "write a time as an age (90d, 12h, 2w: that long ago), a date or time "
    "(2026-12-01, 2026-12-01T09:30, local time unless it names an offset), or 'now'"
)
TAIL = 64 * 1024


@click.group()
def audit() -> None:
    """The audit trail of a period: approvals, emergency overrides, refusals, rollbacks."""


@audit.command("export")
@click.option("--since", default="90d", show_default=True, help="Start: an age (90d) or a date.")
@click.option("--until", default="now", show_default=True, help="End: an age or a date.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "csv"]),
    default="jsonl",
    show_default=True,
    help="One JSON object per line, or CSV with a header.",
)
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write to FILE (0600)."
)
@json_option
@pass_ctx
def export(
    ctx: Context, since: str, until: str, fmt: str, output: Path | None, as_json: bool
) -> None:
    """Export who did what, when and why in a period, with the ledger's verification."""
    now = time.time()
    start, end = parse_time(since, now, "--since"), parse_time(until, now, "--until")
    if start >= end:
        raise UsageError(
            f"--since ({since}) is not before --until ({until})", hint="e.g. --since 90d"
        )
    if as_json and output is None:
        raise UsageError("--json describes the export written to a file", hint="add -o FILE")
    client = ctx.client(timeout=300.0)  # the server verifies the whole ledger first
    tail = bytearray()
    with _destination(output) as sink:
        written = client.download(
            "/api/v1/audit", _Tail(sink, tail), since=start, until=end, format=fmt
        )
    verification = _verification(bytes(tail), fmt)
    summary = {
        "file": str(output) if output else None,
        "format": fmt,
        "bytes": written,
        "since": start,
        "until": end,
        "verification": verification,
    }
    if as_json:
        render.emit_json(summary)
    else:
        _report(summary)
    if verification is not None and not verification.get("ok"):
        sys.exit(EXIT_BROKEN)


def parse_time(text: str, now: float, option: str) -> float:
    """Unix seconds from ``90d`` (ago), ``2026-12-01``, ``2026-12-01T09:30[+01:00]`` or now."""
    value = text.strip()
    if value == "now":
        return now
    match = _AGO.fullmatch(value)
    if match is not None:
        return now - float(match.group("amount")) * _UNITS[match.group("unit")]
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(f"{option} {text!r} is not a time", hint=TIME_HINT) from None
    if moment.tzinfo is None:
        moment = moment.astimezone()  # local time, as people write it
    return moment.timestamp()


class _Tail:
    """A sink that passes every chunk on and keeps the last ``TAIL`` bytes (the verdict)."""

    def __init__(self, sink: Sink, tail: bytearray) -> None:
        self.sink = sink
        self.tail = tail

    def write(self, chunk: bytes) -> int:
        self.sink.write(chunk)
        self.tail += chunk
        del self.tail[:-TAIL]
        return len(chunk)


@contextlib.contextmanager
def _destination(output: Path | None) -> Iterator[Any]:
    """stdout, or a new 0600 file put in place only once the export arrived whole."""
    if output is None:
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    folder = output.resolve().parent
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a directory", hint="create it, or name another -o FILE")
    descriptor, temporary = tempfile.mkstemp(prefix=f".{output.name}.", dir=folder)  # 0600
    try:
        with os.fdopen(descriptor, "wb") as file:
            yield file
        Path(temporary).replace(output)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _verification(tail: bytes, fmt: str) -> dict[str, Any] | None:
    """The export's last record: the ledger's verification (None if it is not there)."""
    lines = tail.decode("utf-8", errors="replace").strip().splitlines()
    if not lines:
        return None
    last = lines[-1]
    if fmt == "csv":
        import csv

        rows = list(csv.reader([last]))
        last = rows[0][-1] if rows and rows[0] else ""
    try:
        record = json.loads(last)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _report(summary: dict[str, Any]) -> None:
    console = render.err()
    where = summary["file"] or "stdout"
    if summary["file"]:
        console.print(
            f"wrote {summary['bytes']} bytes of {summary['format']} to "
            f"{render.esc(where)} (readable by you only)"
        )
    verification = summary["verification"]
    if verification is None:
        console.print("[yellow]warning:[/] the export does not end with the ledger's verification")
    elif verification.get("ok"):
        console.print(
            f"[green]the ledger verifies[/] ({verification.get('checked')} event(s) checked)"
        )
    else:
        inside = " — inside this period" if verification.get("broken_inside_period") else ""
        console.print(
            f"[bold red]error:[/] the ledger is broken at seq {verification.get('first_bad_seq')}"
            f"{inside}: {render.esc(verification.get('problem'))}"
        )
        console.print("[dim]hint:[/] see `conveyor ledger verify --full` and docs/ledger.md")
