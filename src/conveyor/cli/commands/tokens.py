"""`conveyor tokens` and `conveyor whoami`: who may call the API, and who this caller is.

Tokens are the server's: it makes them, keeps only their hashes, and shows a token's
secret once, in the answer to `tokens create`. The CLI calls with ``CONVEYOR_TOKEN`` or,
when that is unset, the admin token `conveyor up` made for the local user (SECURITY.md).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import click

from conveyor.cli import render
from conveyor.cli.context import Context
from conveyor.cli.options import json_option, pass_ctx

ROLES = ("viewer", "deployer", "admin")


@click.group()
def tokens() -> None:
    """API tokens: who may read, deploy or administer, in which environments."""


@tokens.command("list")
@json_option
@pass_ctx
def list_tokens(ctx: Context, as_json: bool) -> None:
    """Every token: its id, identity, role, environments, and when it was used."""
    found: list[dict[str, Any]] = ctx.client().get("/api/v1/tokens")["tokens"]
    if as_json:
        render.emit_json(found)
        return
    if not found:
        render.out().print("no tokens")
        return
    render.out().print(_table(found))


@tokens.command("create")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), required=True, help="What the token may do.")
@click.option(
    "--env",
    "environments",
    multiple=True,
    metavar="ENV",
    help="Only in this environment (repeatable; default: all).",
)
@click.option(
    "--expires-in", metavar="DURATION", help="e.g. 720h; default: never (revoke it instead)."
)
@json_option
@pass_ctx
def create(
    ctx: Context,
    name: str,
    role: str,
    environments: tuple[str, ...],
    expires_in: str | None,
    as_json: bool,
) -> None:
    """Make a token for NAME (a person or a CI job) and print its secret, once."""
    seconds = None
    if expires_in is not None:
        from conveyor.config.durations import parse_duration

        seconds = parse_duration(expires_in, positive=True)
    client = ctx.client()
    made: Mapping[str, Any] = client.post(
        "/api/v1/tokens",
        {
            "name": name,
            "role": role,
            "environments": list(environments) or ["*"],
            "expires_in": seconds,
        },
    )
    if as_json:
        render.emit_json(made)
        return
    console = render.out()
    console.print(
        f"[green]created[/] token {render.esc(made['id'])} for {render.esc(made['identity'])}: "
        f"{_scope(made)}{_expiry(made)}"
    )
    console.print("its secret, shown only now (pass it as CONVEYOR_TOKEN):")
    console.print(str(made["secret"]), markup=False, highlight=False, soft_wrap=True)


@tokens.command("revoke")
@click.argument("token_id", metavar="ID")
@json_option
@pass_ctx
def revoke(ctx: Context, token_id: str, as_json: bool) -> None:
    """Revoke token ID now: every later call with it is refused."""
    revoked: Mapping[str, Any] = ctx.client().post(f"/api/v1/tokens/{token_id}/revoke", {})
    if as_json:
        render.emit_json(revoked)
        return
    render.out().print(
        f"[green]revoked[/] {render.esc(revoked['id'])} ({render.esc(revoked['identity'])})"
    )


@click.command()
@json_option
@pass_ctx
def whoami(ctx: Context, as_json: bool) -> None:
    """Who the server takes this caller for: identity, role and environments."""
    me: Mapping[str, Any] = ctx.client().get("/api/v1/whoami")
    if as_json:
        render.emit_json(me)
        return
    render.out().print(f"{render.esc(me['identity'])}: {_scope(me)}", highlight=False)


def _scope(token: Mapping[str, Any]) -> str:
    envs: Sequence[str] = token.get("environments") or ["*"]
    where = "every environment" if "*" in envs else ", ".join(envs)
    return render.esc(f"{token['role']} in {where}")


def _expiry(token: Mapping[str, Any]) -> str:
    at = token.get("expires_at")
    return f", expires {render.when(at)}" if at else ", never expires"


def _table(found: Sequence[Mapping[str, Any]]) -> Any:
    from rich.table import Table
    from rich.text import Text

    table = Table(title_justify="left")
    for column in ("id", "identity", "role", "environments", "created", "used", "state"):
        table.add_column(column)
    for token in found:
        if token.get("revoked_at"):
            state = Text(f"revoked {render.when(token['revoked_at'])}", style="red")
        elif token.get("expires_at") and token["expires_at"] <= time.time():
            state = Text(f"expired {render.when(token['expires_at'])}", style="yellow")
        elif token.get("expires_at"):
            state = Text(f"expires {render.when(token['expires_at'])}")
        else:
            state = Text("active", style="green")
        table.add_row(
            Text(str(token["id"])),
            Text(str(token["identity"])),
            Text(str(token["role"])),
            Text(", ".join(token.get("environments") or ["*"])),
            Text(render.when(token.get("created_at"))),
            Text(render.when(token["last_used_at"]) if token.get("last_used_at") else "never"),
            state,
        )
    return table
