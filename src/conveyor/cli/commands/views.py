"""Commands that show what runs and what happened: status, history, events, logs.

One GET each; the answer is printed as it came (``--json``) or as a table. These are the
commands people type all day, so this module imports the client and nothing else of
Conveyor's: rich is loaded by ``render`` only when a table is drawn.
"""

from __future__ import annotations

import click

from conveyor.cli import render
from conveyor.cli.context import Context
from conveyor.cli.options import json_option, pass_ctx


@click.command()
@click.option("--env", "env", help="Only this environment.")
@json_option
@pass_ctx
def status(ctx: Context, env: str | None, as_json: bool) -> None:
    """What runs where: revision, version, artifact, config, readiness, rollout, address."""
    client = ctx.client()
    if not as_json:
        render.preload()
    rows = client.get("/api/v1/status", env=env)["services"]
    if as_json:
        render.emit_json(rows)
    elif not rows:
        render.out().print("nothing deployed yet")
    else:
        render.out().print(render.status_table(rows))


@click.command()
@click.argument("service")
@click.option("--env", "env", required=True, help="Environment.")
@click.option("--limit", default=20, show_default=True, help="How many releases, newest first.")
@json_option
@pass_ctx
def history(ctx: Context, service: str, env: str, limit: int, as_json: bool) -> None:
    """The releases of SERVICE in ENV, newest first, with why each ended as it did."""
    client = ctx.client()
    if not as_json:
        render.preload()
    answer = client.get("/api/v1/history", service=service, env=env, limit=limit)
    releases = answer["releases"]
    if as_json:
        render.emit_json(releases)
    elif not releases:
        render.out().print(f"no releases of {service} in {env}", markup=False)
    else:
        render.out().print(render.history_table(releases))


@click.command()
@click.option("--service", help="Only events of this service.")
@click.option("--env", "env", help="Only events of this environment.")
@click.option("--release", "release_id", type=int, help="Only events of this release (its id).")
@click.option("--limit", default=200, show_default=True, help="At most this many events.")
@json_option
@pass_ctx
def events(
    ctx: Context,
    service: str | None,
    env: str | None,
    release_id: int | None,
    limit: int,
    as_json: bool,
) -> None:
    """The ledger: every transition with its actor, time and details."""
    client = ctx.client()
    if not as_json:
        render.preload()
    rows = client.get("/api/v1/events", service=service, env=env, release=release_id, limit=limit)[
        "events"
    ]
    if as_json:
        render.emit_json(rows)
        return
    if not rows:
        render.out().print("no events", markup=False)
        return
    render.out().print(render.events_table(rows))


@click.command()
@click.argument("service")
@click.option("--env", "env", required=True, help="Environment.")
@click.option("--lines", "-n", default=50, show_default=True, help="Lines per instance.")
@json_option
@pass_ctx
def logs(ctx: Context, service: str, env: str, lines: int, as_json: bool) -> None:
    """Show the captured output of SERVICE's instances in ENV."""
    client = ctx.client()
    if not as_json:
        render.preload()
    answer = client.get("/api/v1/logs", service=service, env=env, lines=lines)
    instances: dict[str, list[str]] = answer["instances"]
    if as_json:
        render.emit_json({"service": service, "env": env, "instances": instances})
        return
    console = render.out()
    if not instances:
        console.print(f"no logs yet for {service} in {env}", markup=False)
    for name, text in instances.items():
        console.rule(render.esc(name))
        for line in text:
            console.print(line, markup=False)
