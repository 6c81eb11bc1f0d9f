"""Options shared by many commands, and how a command receives its ``Context``.

``-C DIR`` and ``--file`` are declared on the root group and again, by ``project_options``,
on every command as it is loaded (``lazy.LazyGroup``): both places write the same
``Context``, so their position on the command line does not matter; given twice, the last
one wins. ``--json`` also notes itself in the context's ``meta``, so that the one error
handler (``failures.handles_errors``) knows to answer in JSON even for an error raised
before the command's own code runs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from conveyor.cli.context import Context

F = TypeVar("F", bound=Callable[..., Any])
JSON_FLAG = "conveyor.json"
DIRECTORY_HELP = "Project directory (where conveyor.yaml is)."
FILE_HELP = "Config file (relative to the project directory)."

pass_ctx = click.make_pass_decorator(Context)


def wants_json(ctx: click.Context | None) -> bool:
    return bool(ctx is not None and ctx.meta.get(JSON_FLAG))


def _remember_json(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    if value:
        ctx.meta[JSON_FLAG] = True
    return value


def json_option(fn: F) -> F:
    return click.option(
        "--json", "as_json", is_flag=True, help="Machine-readable output.", callback=_remember_json
    )(fn)


def _set_directory(ctx: click.Context, param: click.Parameter, value: Path | None) -> None:
    target = ctx.find_object(Context)
    if value is not None and target is not None:
        target.directory = value


def _set_file(ctx: click.Context, param: click.Parameter, value: Path | None) -> None:
    target = ctx.find_object(Context)
    if value is not None and target is not None:
        target.set_file(value)


def project_options() -> list[click.Parameter]:
    """``-C DIR`` and ``--file`` for a command (new objects: click parameters are per command)."""
    return [
        click.Option(
            ["-C", "project_directory"],
            type=click.Path(file_okay=False, path_type=Path),
            metavar="DIR",
            expose_value=False,
            callback=_set_directory,
            help=DIRECTORY_HELP,
        ),
        click.Option(
            ["--file", "project_file"],
            type=click.Path(dir_okay=False, path_type=Path),
            expose_value=False,
            callback=_set_file,
            help=FILE_HELP,
        ),
    ]
