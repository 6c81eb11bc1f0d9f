"""`conveyor keys`: the server's signing key, shown and rotated through the API.

The key signs every artifact's provenance and every pipeline attestation; it is the
server's, and the CLI never reads it (``GET /api/v1/keys``, ``POST /api/v1/keys/rotate``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click

from conveyor.cli import render
from conveyor.cli.context import Context
from conveyor.cli.options import json_option, pass_ctx


@click.group()
def keys() -> None:
    """The key that signs every artifact's provenance, and the keys deploys trust."""


@keys.command("show")
@json_option
@pass_ctx
def show(ctx: Context, as_json: bool) -> None:
    """Print the signing key's public half and fingerprint (created if there is none yet)."""
    answer = ctx.client().get("/api/v1/keys")
    if as_json:
        render.emit_json(answer)
        return
    console = render.out()
    console.print(f"signing key [bold]{render.esc(answer['key'])}[/] ({answer['algorithm']})")
    console.print(render.esc(str(answer["public_key"]).rstrip()), highlight=False)
    console.print(f"trusted for verifying: {len(answer['trusted'])} key(s)")
    retired = answer.get("retired") or []
    if retired:
        console.print(
            f"retired: {len(retired)} key(s), each vouching only for artifacts recorded "
            "before it was retired"
        )


@keys.command("rotate")
@json_option
@pass_ctx
def rotate(ctx: Context, as_json: bool) -> None:
    """Sign new artifacts with a new key; the old public key stays trusted for older ones."""
    answer: Mapping[str, Any] = ctx.client().post("/api/v1/keys/rotate", {})
    if as_json:
        render.emit_json(answer)
        return
    previous = answer.get("previous")
    was = f" (was {previous}, now retired: it vouches only for older artifacts)" if previous else ""
    render.out().print(
        f"[green]rotated[/] signing key is now {render.esc(answer['key'])}{render.esc(was)}"
    )
