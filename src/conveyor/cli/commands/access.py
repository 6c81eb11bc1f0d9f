"""`conveyor access`: who may do what where — the policy in force, and what the file proposes.

``access:`` in conveyor.yaml is a proposal: reading it live would let anyone who can edit
the file grant themselves approval rights. The server keeps the policy an admin last
applied (an ``access.applied`` ledger event); `access show` prints it beside the file's
proposal and the role changes between the two, and `access apply` (admins only) puts the
file's proposal in force.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import click

from conveyor.cli import render
from conveyor.cli.context import Context
from conveyor.cli.options import json_option, pass_ctx


@click.group()
def access() -> None:
    """Roles per environment: the access policy in force, and applying conveyor.yaml's."""


@access.command("show")
@json_option
@pass_ctx
def show(ctx: Context, as_json: bool) -> None:
    """The policy in force, and what conveyor.yaml proposes if it differs (with the changes)."""
    answer: dict[str, Any] = ctx.client().get("/api/v1/access")
    if as_json:
        render.emit_json(answer)
        return
    out = render.out().print
    applied = answer["applied"]
    if applied is None:
        out(
            "[bold]in force[/]: no access policy has been applied; tokens alone decide "
            "(viewer, deployer, admin; approvers are deployers, the emergency path is admins')"
        )
    else:
        out(f"[bold]in force[/]: v{answer['version']}")
        _policy(applied)
    proposed = answer["file"]
    if proposed is None:
        out(
            "\n[bold]conveyor.yaml[/] has no access: block; `conveyor access apply` would put "
            "an empty policy in force, which grants nobody a role in any environment (reads "
            "and admin tokens' administration still work)"
        )
        return
    if not answer["pending"]:
        out("\n[bold]conveyor.yaml[/] proposes the same policy: nothing to apply")
        return
    out("\n[bold]conveyor.yaml proposes[/] (not in force until an admin applies it):")
    _policy(proposed)
    _changes((answer.get("changes") or {}).get("changes") or [])
    out("[dim]put it in force: conveyor access apply (admins)[/]")


@access.command("apply")
@json_option
@pass_ctx
def apply(ctx: Context, as_json: bool) -> None:
    """Put conveyor.yaml's access: in force (admins); the change goes on the ledger."""
    applied: dict[str, Any] = ctx.client().post("/api/v1/access/apply", {})
    if as_json:
        render.emit_json(applied)
        return
    render.out().print(f"[green]applied[/] access policy v{applied['version']}")
    _changes(applied.get("changes") or [])


def _policy(policy: Mapping[str, Any]) -> None:
    esc = render.esc
    out = render.out().print
    for name, members in policy["groups"].items():
        out(f"  group {esc(name)}: {esc(', '.join(members) or '(nobody)')}")
    for env, grants in policy["environments"].items():
        where = "every other environment (*)" if env == "*" else env
        roles = "; ".join(f"{role}: {', '.join(refs)}" for role, refs in grants.items())
        out(f"  {esc(where)}: {esc(roles or '(no roles)')}")


def _changes(changes: Sequence[Mapping[str, str]]) -> None:
    out = render.out().print
    if not changes:
        out("  no role changes")
        return
    out("  role changes:")
    for change in changes:
        where = "every other environment (*)" if change["env"] == "*" else change["env"]
        role, esc = change["role"], render.esc
        if "granted" in change:
            who = _who(change["granted"])
            out(f"    [green]+[/] {esc(who)} becomes {esc(role)} in {esc(where)}")
        else:
            who = _who(change["revoked"])
            out(f"    [red]-[/] {esc(who)} is no longer {esc(role)} in {esc(where)}")


def _who(member: str) -> str:
    return "everyone with a token (*)" if member == "*" else member
