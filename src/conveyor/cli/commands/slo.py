"""SLOs: their budgets as the server judges them, and the same alerts as Prometheus rules.

``slo status`` asks the server (which samples and judges every SLO, ``application/slos.py``);
``slo rules`` needs no server: it reads conveyor.yaml here and writes the recording and
alerting rules (``core/slo_rules.py``) for Prometheus to evaluate (check them with
``promtool check rules``).
"""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any

import click

from conveyor import errors
from conveyor.cli import render
from conveyor.cli.context import Context
from conveyor.cli.options import json_option, pass_ctx


@click.group()
def slo() -> None:
    """SLOs: error budgets and burn-rate alerts; Prometheus rules for the same alerts."""


@slo.command()
@click.option("--service", help="Only this service.")
@click.option("--env", "env", help="Only this environment.")
@json_option
@pass_ctx
def status(ctx: Context, service: str | None, env: str | None, as_json: bool) -> None:
    """Each SLO's budget remaining, burn rate per window and alerts firing."""
    client = ctx.client()
    if not as_json:
        render.preload()
    states = client.get("/api/v1/slos", service=service, env=env)["slos"]
    if as_json:
        render.emit_json(states)
        return
    if not states:
        render.out().print("no SLO has been judged yet (none declared, or no traffic counted)")
        return
    from rich.table import Table

    table = Table(title_justify="left")
    for column in (
        "service",
        "env",
        "slo",
        "objective",
        "budget left",
        "burn 5m/1h/6h/3d",
        "alerts",
    ):
        table.add_column(column)
    for s in states:
        burn = s["burn_rates"]
        rates = "/".join(
            "-" if burn.get(w) is None else f"{burn[w]:.1f}" for w in ("5m", "1h", "6h", "3d")
        )
        left = f"{s['budget_remaining'] * 100:.1f}%"
        table.add_row(
            render.esc(s["service"]),
            render.esc(s["env"]),
            render.esc(s["slo"]),
            f"{s['objective'] * 100:g}% / {s['period']}",
            f"[red]{left} (exhausted)[/]" if s["exhausted"] else left,
            rates,
            render.esc(", ".join(s["firing"]) or "-"),
        )
    render.out().print(table)


@slo.command()
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the rule file here (default: standard output).",
)
@pass_ctx
def rules(ctx: Context, output: Path | None) -> None:
    """Write Prometheus recording and alerting rules for every SLO of conveyor.yaml."""
    from ruamel.yaml import YAML
    from ruamel.yaml.scalarstring import LiteralScalarString

    from conveyor.core.slo_rules import rule_groups

    config = ctx.project().config
    specs = [
        slo.spec(service, env)
        for service, spec in config.services.items()
        for slo in spec.slos
        for env in slo.environments
    ]
    if not specs:
        raise errors.UsageError(
            "conveyor.yaml declares no SLO",
            hint="add slos: to a service, e.g. slos: [{name: availability, objective: 99.9%}]",
        )
    document: Any = rule_groups(specs)
    for group in document["groups"]:
        for rule in group["rules"]:
            rule["expr"] = LiteralScalarString(rule["expr"])
    yaml = YAML()
    yaml.default_flow_style = False
    buffer = io.StringIO()
    yaml.dump(document, buffer)
    text = "# Written by `conveyor slo rules`; regenerate rather than edit.\n" + buffer.getvalue()
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text)
