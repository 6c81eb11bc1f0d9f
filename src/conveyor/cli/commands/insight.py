"""Delivery insight: DORA's five keys, and incidents.

Thin clients of ``GET /api/v1/dora`` and ``/api/v1/incidents``: the server computes, the
command prints. Periods are written as people say them (``90d``, ``12w``, ``36h``) and sent
as Unix seconds.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any

import click

from conveyor import errors
from conveyor.cli import render
from conveyor.cli.context import Context
from conveyor.cli.options import json_option, pass_ctx

_PERIOD = re.compile(r"(\d{1,4})\s*([hdw])")
_UNIT = {"h": 3600, "d": 86400, "w": 7 * 86400}


def parse_period(text: str) -> float:
    """Seconds in ``90d``, ``12w`` or ``36h``."""
    found = _PERIOD.fullmatch(text.strip())
    if found is None or int(found.group(1)) == 0:
        raise errors.UsageError(
            f"{text!r} is not a period",
            hint="write a number of hours, days or weeks: 36h, 90d, 12w",
        )
    return int(found.group(1)) * _UNIT[found.group(2)]


@click.command()
@click.option("--service", help="Only this service.")
@click.option("--env", "env", default="production", show_default=True, help="Environment.")
@click.option("--since", default="90d", show_default=True, help="Period: 36h, 90d, 12w.")
@json_option
@pass_ctx
def dora(ctx: Context, service: str | None, env: str, since: str, as_json: bool) -> None:
    """DORA's five keys per service, each with its DORA 2024 performance band.

    Deployment frequency, lead time for changes, change failure rate, failed-deployment
    recovery time and deployment rework rate, as defined in docs/insight.md.
    """
    now = time.time()
    client = ctx.client()
    if not as_json:
        render.preload()
    report = client.get(
        "/api/v1/dora", env=env, service=service, since=now - parse_period(since), until=now
    )
    if as_json:
        render.emit_json(report)
        return
    console = render.out()
    console.print(
        f"{render.esc(env)}, last {render.esc(since)} (bands: {render.esc(report['bands_from'])})"
    )
    rows = (
        [*report["services"], report["total"]]
        if len(report["services"]) != 1
        else [report["total"]]
    )
    console.print(_table(rows))
    failures = report["total"]["failures"]
    if failures:
        console.print("failed deployments:")
        for f in failures[-10:]:
            took = "not recovered" if f["recovery"] is None else _duration(f["recovery"])
            console.print(
                f"  {render.esc(f['service'])} r{f['revision']}: {render.esc(f['why'])} "
                f"(recovered in {took})",
                markup=False,
            )


def _table(rows: list[Mapping[str, Any]]) -> Any:
    from rich.table import Table

    table = Table(title_justify="left")
    for column in ("service", "deploys/week", "lead time", "change failure", "recovery", "rework"):
        table.add_column(column)
    for row in rows:
        freq, lead = row["deployment_frequency"], row["lead_time"]
        cfr, rec, rework = row["change_failure_rate"], row["recovery_time"], row["rework_rate"]
        table.add_row(
            render.esc(row["service"] or "all"),
            f"{freq['per_week']:.1f} {_band(freq['band'])}",
            f"{_duration(lead['median'])} {_band(lead['band'])}",
            f"{_percent(cfr['rate'])} ({cfr['failed']}/{cfr['changes']}) {_band(cfr['band'])}",
            f"{_duration(rec['median'])} {_band(rec['band'])}",
            f"{_percent(rework['rate'])} ({rework['rework']}/{rework['deployments']})",
        )
    return table


_BAND_STYLE = {"elite": "bold green", "high": "green", "medium": "yellow", "low": "red"}


def _band(band: str | None) -> str:
    return "" if band is None else f"[{_BAND_STYLE[band]}]{band}[/]"


def _percent(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.1f}%"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


@click.group()
def incident() -> None:
    """Incidents: open, resolve, list (ledger events; they count in DORA's keys).

    An incident counts against the release running in its environment when it opened.
    """


@incident.command("open")
@click.argument("title")
@click.option("--service", help="The service that is affected.")
@click.option("--env", "env", help="Where (links the incident to the release running there).")
@click.option("--severity", help="e.g. page, ticket, sev1.")
@json_option
@pass_ctx
def open_(
    ctx: Context,
    title: str,
    service: str | None,
    env: str | None,
    severity: str | None,
    as_json: bool,
) -> None:
    """Open an incident called TITLE."""
    body = {"title": title, "service": service, "env": env, "severity": severity}
    found = ctx.client().post("/api/v1/incidents", body)
    if as_json:
        render.emit_json(found)
        return
    linked = f" (against release #{found['release_id']})" if found["release_id"] else ""
    render.out().print(f"incident {found['id']} opened{linked}", markup=False)


@incident.command()
@click.argument("incident_id", type=int)
@click.option("--note", default="", help="How it was resolved.")
@json_option
@pass_ctx
def resolve(ctx: Context, incident_id: int, note: str, as_json: bool) -> None:
    """Resolve incident INCIDENT_ID."""
    found = ctx.client().post(f"/api/v1/incidents/{incident_id}/resolve", {"note": note})
    if as_json:
        render.emit_json(found)
        return
    took = _duration(found["resolved_at"] - found["opened_at"])
    render.out().print(f"incident {found['id']} resolved after {took}", markup=False)


@incident.command("list")
@click.option("--all", "everything", is_flag=True, help="Resolved ones too (newest first).")
@click.option("--service", help="Only this service.")
@click.option("--env", "env", help="Only this environment.")
@click.option("--limit", default=50, show_default=True)
@json_option
@pass_ctx
def list_(
    ctx: Context,
    everything: bool,
    service: str | None,
    env: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """Open incidents (with --all, resolved ones too)."""
    client = ctx.client()
    if not as_json:
        render.preload()
    found = client.get(
        "/api/v1/incidents", all=1 if everything else None, service=service, env=env, limit=limit
    )["incidents"]
    if as_json:
        render.emit_json(found)
        return
    if not found:
        render.out().print("no incidents" if everything else "no open incidents")
        return
    from rich.table import Table

    table = Table(title_justify="left")
    for column in ("id", "title", "service", "env", "opened", "resolved", "release", "source"):
        table.add_column(column)
    for i in found:
        table.add_row(
            str(i["id"]),
            render.esc(i["title"]),
            render.esc(i["service"] or "-"),
            render.esc(i["env"] or "-"),
            render.when(i["opened_at"]),
            render.when(i["resolved_at"]) if i["resolved_at"] else "open",
            f"#{i['release_id']}" if i["release_id"] else "-",
            render.esc(i["source"]),
        )
    render.out().print(table)
