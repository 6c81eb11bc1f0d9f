"""`conveyor build`: build a service here and hand the artifact to the project's server."""

from __future__ import annotations

import click

from conveyor.cli import render
from conveyor.cli.context import Context
from conveyor.cli.options import json_option, pass_ctx


@click.command()
@click.argument("service")
@json_option
@pass_ctx
def build(ctx: Context, service: str, as_json: bool) -> None:
    """Build SERVICE into an immutable, content-addressed artifact."""
    from conveyor.cli.publish import build_and_publish, print_published

    client = ctx.client()  # no server, no build: the artifact would have nowhere to go
    config = ctx.project().config.service(service)
    if not as_json:
        render.out().print(f"building [bold]{render.esc(service)}[/] …")
    published = build_and_publish(client, ctx.layout, service, config)
    if as_json:
        render.emit_json(published.to_json())
    else:
        print_published(service, published)
