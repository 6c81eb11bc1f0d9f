"""`conveyor windows`: may deploys start now, by which window, and when does that change?

Asked of the server (GET /api/v1/windows; a viewer token is enough), which reads the
windows from conveyor.yaml as a deploy would and judges them with its own clock, so the
answer is the one a deploy would get, and this module needs no calendar: it imports the
client and, to draw, rich (after ``render.out()`` has waited for it to load).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click

from conveyor.cli import render
from conveyor.cli.context import Context
from conveyor.cli.options import json_option, pass_ctx


@click.command()
@click.option("--env", "env", help="Only this environment.")
@click.option("--service", help="Only this service.")
@json_option
@pass_ctx
def windows(ctx: Context, env: str | None, service: str | None, as_json: bool) -> None:
    """Whether deploys may start now, per environment: by which window, and the next change.

    Deny windows win; where an allow window applies, deploys start only inside one. A row
    stands for every service unless the windows differ between services there. Rollbacks
    are never held back by a window.
    """
    client = ctx.client()
    if not as_json:
        render.preload()
    answer = client.get("/api/v1/windows", env=env, service=service)
    if as_json:
        render.emit_json(answer)
        return
    console = render.out()
    from rich.table import Table
    from rich.text import Text

    now = Table(title="deploys now", title_justify="left", expand=False)
    for column in ("env", "services", "deploys", "because", "next"):
        now.add_column(column, no_wrap=column in ("env", "deploys"))
    for row in answer["rows"]:
        services = "all" if row["every_service"] else ", ".join(row["services"])
        state = Text("open", style="green") if row["open"] else Text("closed", style="red")
        now.add_row(Text(row["env"]), Text(services), state, Text(because(row)), Text(after(row)))
    console.print(now)
    declared = answer["windows"]
    if not declared:
        console.print("no windows in conveyor.yaml: deploys may start at any time", markup=False)
        return
    table = Table(title="windows", title_justify="left", expand=False)
    for column in ("name", "kind", "when", "applies to", "reason"):
        table.add_column(column, no_wrap=column in ("name", "kind"))
    for window in declared:
        table.add_row(
            Text(window["name"]),
            Text(window["kind"], style="green" if window["kind"] == "allow" else "red"),
            Text(when(window)),
            Text(applies_to(window)),
            Text(window["reason"] or ""),
        )
    console.print(table)


def because(row: Mapping[str, Any]) -> str:
    why, name, reason = row["why"], row["window"], row["reason"]
    text = {
        "no-window": "no window applies",
        "no-deny": "no deny window in force",
        "allow": f"inside allow window '{name}'",
        "deny": f"deny window '{name}'",
        "outside-allow": f"outside every allow window (next: '{name}')",
    }.get(why, str(row.get("why_text") or why))
    return f"{text}: {reason}" if reason and why in ("allow", "deny") else text


def after(row: Mapping[str, Any]) -> str:
    """The next change, by which window, then the one after it, a line each."""
    first, second = (row["closes"], row["opens"]) if row["open"] else (row["opens"], row["closes"])
    verb = "closes" if row["open"] else "opens"
    if first is None:
        known = row["known_until"]
        return "never changes" if known is None else f"no change before {known['text']}"
    text = f"{verb} {first['text']} ({first['window']})"
    if second is not None:
        again = "opens again" if row["open"] else "then closes"
        text += f"\n{again} {second['text']}"
    return text


def when(window: Mapping[str, Any]) -> str:
    if window["schedule"] is not None:
        return f"{window['schedule']} for {window['duration_text']} ({window['timezone']})"
    return f"from {window['from']['text']}\nto {window['to']['text']}"


def applies_to(window: Mapping[str, Any]) -> str:
    envs = ", ".join(window["environments"]) or "every environment"
    services = ", ".join(window["services"]) or "every service"
    return f"{services} in {envs}"
