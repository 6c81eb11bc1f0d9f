"""`conveyor server`, `up` and `down`: the project's server, in the foreground or not."""

from __future__ import annotations

import click

from conveyor.cli import render
from conveyor.cli.context import Context
from conveyor.cli.options import json_option, pass_ctx


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=0, show_default=True, help="API port (0 picks a free one).")
@pass_ctx
def server(ctx: Context, host: str, port: int) -> None:
    """Run the server in the foreground (API, controller, runtime, routers)."""
    from conveyor.server.runner import run

    run(ctx.config_file(), host=host, port=port)


@click.command()
@click.option("--port", default=0, show_default=True, help="API port (0 picks a free one).")
@json_option
@pass_ctx
def up(ctx: Context, port: int, as_json: bool) -> None:
    """Start the project's server in the background."""
    from conveyor.run_as import current, root_warning
    from conveyor.server.daemon import up as start

    project = ctx.project()  # a broken config is reported here, not in the server's log
    url = start(ctx.layout, project.file, port=port)
    config = project.config
    jobs = [] if config.pipeline is None else [config.pipeline.run_as]
    warning = root_warning(current(), {n: s.run_as for n, s in config.services.items()}, jobs)
    if as_json:
        render.emit_json(
            {"url": url, "dashboard": f"{url}/ui/", "warnings": [warning] if warning else []}
        )
    else:
        render.out().print(f"[green]up[/] conveyor server at {render.esc(url)}")
        render.out().print(f"dashboard: {render.esc(url)}/ui/ (`conveyor dashboard` opens it)")
        if warning:
            render.out().print(f"[yellow]warning[/]: {render.esc(warning)}")


@click.command()
@json_option
@pass_ctx
def down(ctx: Context, as_json: bool) -> None:
    """Stop the server, its routers and every instance it started."""
    from conveyor.server.daemon import stop_everything

    pid, routers, instances = stop_everything(ctx.layout)
    if as_json:
        render.emit_json(
            {
                "stopped_server": pid,
                "stopped_routers": routers,
                "stopped_leftover_instances": instances,
            }
        )
        return
    console = render.out()
    if pid is None:
        console.print("no server was running")
    else:
        console.print(f"[green]down[/] server (pid {pid}) stopped")
    if routers:
        console.print(f"stopped router(s): {render.esc(', '.join(routers))}")
    if instances:
        console.print(f"stopped {instances} instance(s)")


@click.command()
@click.option("--no-open", is_flag=True, help="Print the address only; do not open a browser.")
@json_option
@pass_ctx
def dashboard(ctx: Context, no_open: bool, as_json: bool) -> None:
    """Open the web dashboard of the running server in a browser."""
    import webbrowser

    from conveyor.errors import ServerUnavailable
    from conveyor.server.files import running_server

    server = running_server(ctx.layout)
    if server is None:
        raise ServerUnavailable(
            f"no Conveyor server is running for {ctx.layout.root}",
            hint="start it with `conveyor up`; the dashboard is on the same address",
        )
    url = f"{server.url}/ui/"
    opened = False if no_open or as_json else webbrowser.open(url)
    if as_json:
        render.emit_json({"url": url, "token_file": str(ctx.layout.admin_token)})
        return
    console = render.out()
    console.print(f"dashboard: {render.esc(url)}" + ("" if opened else " (open it in a browser)"))
    console.print(
        f"sign in with a token: yours is in {render.esc(str(ctx.layout.admin_token))}, "
        "or `conveyor tokens create NAME --role viewer`"
    )
