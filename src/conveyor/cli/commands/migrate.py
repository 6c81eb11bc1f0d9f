"""`conveyor migrate`: schema migrations outside a release, on purpose.

``migrate status`` shows what an environment's schema holds and which rollbacks stay safe.
Migrations normally run as a release step (``migrate:`` in conveyor.yaml) and a rollback
never runs one. ``migrate undo`` is the deliberate exception: it runs the undo an expand
shipped with against one environment's database, through the server (admins only, with a
reason, refused while that environment runs code built with the expand). Its output and
duration go on the ledger (``migration.undone`` or ``migration.undo_failed``).
"""

from __future__ import annotations

import sys

import click

from conveyor.cli import render
from conveyor.cli.context import Context
from conveyor.cli.options import json_option, pass_ctx

EXIT_UNDO_FAILED = 11


@click.group("migrate")
def migrate() -> None:
    """Schema migrations: what an environment's schema holds; undo an expand on purpose."""


@migrate.command("status")
@click.argument("service")
@click.option("--env", "env", required=True, help="Environment whose schema is shown.")
@json_option
@pass_ctx
def status(ctx: Context, service: str, env: str, as_json: bool) -> None:
    """What ENV's schema holds for SERVICE: the running release's migrations (applied,
    contracted or undone), the releases a rollback may still reach, and those that old code
    lives in (a contract waits for them)."""
    shown = ctx.client().get("/api/v1/migrations", service=service, env=env)
    if as_json:
        render.emit_json(shown)
        return
    esc, out = render.esc, render.out()
    if not shown["migrate"]:
        running = shown["running"] or "nothing"
        out.print(
            f"{esc(service)} in {esc(env)} runs {esc(running)}, which declares no migrate: step"
        )
        return
    out.print(f"{esc(shown['running'])}: schema")
    colour = {"applied": "green", "contracted": "cyan", "undone": "yellow"}
    for m in shown["migrations"]:
        state = m["state"]
        extra = f" by {esc(m['undone_by'])}" if state == "undone" else ""
        after = f" (completes {esc(', '.join(m['after']))})" if m["after"] else ""
        out.print(f"  {esc(m['id'])}  {m['kind']}{after}  [{colour[state]}]{state}{extra}[/]")
    if shown["rollback_targets"]:
        out.print("rollback targets:")
        for target in shown["rollback_targets"]:
            verdict = (
                "[green]safe[/]" if target["safe"] else f"[red]not safe[/]: {esc(target['why'])}"
            )
            out.print(f"  r{target['revision']}  {verdict}")
    holding = shown["holding_contracts"]
    if holding:
        out.print("old code lives in (a contract waits until none lacks its expand):")
        for h in holding:
            out.print(f"  {esc(h['name'])} {esc(h['why'])}")


@migrate.command("undo")
@click.argument("service")
@click.argument("migration")
@click.option("--env", "env", required=True, help="Environment whose database is changed.")
@click.option("--reason", required=True, help="Why it is undone (on the ledger).")
@json_option
@pass_ctx
def undo(ctx: Context, service: str, migration: str, env: str, reason: str, as_json: bool) -> None:
    """Run the undo of the expand MIGRATION (its id: the file name without .sql/.py) in ENV.

    Refused while ENV runs a release built with it: roll back first. Afterwards, releases
    built with it are not safe to roll back to until a deploy applies it again.
    """
    client = ctx.client(timeout=3600.0)
    done = client.post(
        "/api/v1/migrations/undo",
        {"service": service, "env": env, "migration": migration, "reason": reason},
    )
    if as_json:
        render.emit_json(done)
    else:
        esc = render.esc
        state = "[green]undone[/]" if done["ok"] else "[red]undo failed[/]"
        render.out().print(
            f"{esc(done['migration'])} in {esc(env)}: {state} ({esc(done['result'])}, "
            f"{done['seconds']:.2f}s, from {esc(done['from'])}); ledger #{done['event']}"
        )
        if done.get("output"):
            render.out().print(f"[dim]{esc(done['output'].rstrip())}[/]")
        unsafe = [r["name"] for r in done.get("no_longer_safe") or []]
        if unsafe:
            render.out().print(f"no longer safe to roll back to: {esc(', '.join(unsafe))}")
    if not done["ok"]:
        sys.exit(EXIT_UNDO_FAILED)
