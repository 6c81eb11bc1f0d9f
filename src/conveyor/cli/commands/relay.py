"""`conveyor relay`: run a caching flag relay next to applications (see docs/flags.md)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from conveyor.cli.context import Context
from conveyor.cli.options import pass_ctx
from conveyor.errors import UsageError


@click.command()
@click.option(
    "--server", "server", metavar="URL", help="The Conveyor server (default: this project's)."
)
@click.option(
    "--env",
    "envs",
    multiple=True,
    required=True,
    metavar="ENV",
    help="Serve ENV's flags (repeatable).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8787, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep the last known sets here (0600 files); default .conveyor/relay/.",
)
@click.option(
    "--sdk-keys",
    "keys_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="File of SDK keys, one per line (or CONVEYOR_RELAY_KEYS, comma-separated).",
)
@click.option("--interval", default="5s", show_default=True, help="Sync and forward interval.")
@pass_ctx
def relay(
    ctx: Context,
    server: str | None,
    envs: tuple[str, ...],
    host: str,
    port: int,
    cache_dir: Path | None,
    keys_file: Path | None,
    interval: str,
) -> None:
    """A flag relay next to applications: syncs flags, serves SDKs and OFREP through outages."""
    import asyncio

    from conveyor.config.durations import parse_duration
    from conveyor.relay.process import RelayConfig, run_relay

    keys = [k.strip() for k in os.environ.get("CONVEYOR_RELAY_KEYS", "").split(",") if k.strip()]
    if keys_file is not None:
        if keys_file.stat().st_size > 1024 * 1024:
            raise UsageError(f"{keys_file} is over 1 MiB")
        keys += [line.strip() for line in keys_file.read_text().splitlines() if line.strip()]
    if not keys:
        raise UsageError(
            "the relay needs SDK keys: applications present one to read flags",
            hint="--sdk-keys FILE (one key per line) or CONVEYOR_RELAY_KEYS=key1,key2",
        )
    token = os.environ.get("CONVEYOR_TOKEN")
    if server is None or token is None or cache_dir is None:
        from conveyor.cli.client import token as project_token
        from conveyor.server.files import running_server

        layout = ctx.layout
        if server is None:
            running = running_server(layout)
            if running is None:
                raise UsageError("no server to sync from", hint="--server URL, or `conveyor up`")
            server = running.url
        token = token or project_token(layout)
        cache_dir = cache_dir or layout.state / "relay"
    if not token:
        raise UsageError("the relay needs a token to read flags", hint="set CONVEYOR_TOKEN")
    seconds = parse_duration(interval, positive=True)
    config = RelayConfig(server, token, list(envs), keys, host, port, cache_dir, seconds)
    asyncio.run(run_relay(config))
