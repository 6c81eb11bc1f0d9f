"""`conveyor ledger verify`: is the ledger what the server wrote?

Asked of the server (GET /api/v1/ledger/verify; a viewer token is enough). A broken ledger
is an outcome, not an error of the command: exit 14, with the first broken link named.
"""

from __future__ import annotations

import sys

import click

from conveyor.cli import render
from conveyor.cli.context import Context
from conveyor.cli.options import json_option, pass_ctx

EXIT_LEDGER_BROKEN = 14


@click.group()
def ledger() -> None:
    """The ledger's hash chain and signed checkpoints: verify them."""


@ledger.command("verify")
@click.option(
    "--full", is_flag=True, help="From genesis, not the last checkpoint (~12 s per 1M events)."
)
@json_option
@pass_ctx
def verify(ctx: Context, full: bool, as_json: bool) -> None:
    """Check the chain against the signed checkpoints; name the first broken link."""
    answer = ctx.client(timeout=600.0).get("/api/v1/ledger/verify", full=full or None)
    if as_json:
        render.emit_json(answer)
    elif answer["ok"]:
        anchor = answer["checkpoint"]
        since = "genesis" if anchor is None or answer["full"] else f"checkpoint seq {anchor['seq']}"
        render.out().print(
            f"[green]ledger ok[/]: {answer['checked']} events verified from {since} "
            f"to seq {answer['head']}"
        )
    else:
        render.err().print(
            f"[red]ledger broken at seq {answer['first_bad_seq']}[/] ({answer['fault']}): "
            f"{render.esc(answer['problem'])}"
        )
    if not answer["ok"]:
        sys.exit(EXIT_LEDGER_BROKEN)
