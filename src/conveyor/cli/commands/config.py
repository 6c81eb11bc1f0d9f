"""`conveyor validate` and `conveyor schema`: the config file, read here, no server needed."""

from __future__ import annotations

import json
from typing import Any

import click

from conveyor.cli import render
from conveyor.cli.context import Context
from conveyor.cli.options import json_option, pass_ctx


@click.command()
@json_option
@pass_ctx
def validate(ctx: Context, as_json: bool) -> None:
    """Check conveyor.yaml; errors name file, line, field and a fix."""
    project = ctx.project()
    summary: dict[str, Any] = {
        "file": str(project.file),
        "project": project.config.project,
        "services": list(project.config.services),
        "environments": list(project.config.environments),
        "valid": True,
    }
    if as_json:
        render.emit_json(summary)
        return
    name = repr(project.config.project)
    render.out().print(
        f"[green]ok[/] {render.esc(project.file)}: project {render.esc(name)}, "
        f"{len(summary['services'])} service(s), "
        f"environments {render.esc(', '.join(summary['environments']))}"
    )


@click.command()
@json_option
def schema(as_json: bool) -> None:
    """Print the JSON Schema of conveyor.yaml (for editor completion)."""
    from conveyor.config.schema import json_schema

    print(json.dumps(json_schema(), indent=2))
