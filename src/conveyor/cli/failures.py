"""The one place where a command's failure becomes what the user sees, and an exit code.

``handles_errors`` wraps the root group's ``invoke``, so it covers every command, loading a
command's module included, and no command can forget it:

- a ``ConveyorError`` (raised here or mapped back from the server) prints its message and
  hint, or its JSON form under ``--json``, and exits with its ``exit_code``;
- Ctrl-C exits 130 without a traceback;
- anything else is a bug in Conveyor: one line that says so, with the exception's type and
  message, and the traceback only when ``CONVEYOR_DEBUG=1``.

click's own exceptions (bad options, ``--help``, ``--version``) pass through to click.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import click

from conveyor.cli.options import wants_json
from conveyor.errors import ConveyorError

F = TypeVar("F", bound=Callable[..., Any])
DEBUG_VARIABLE = "CONVEYOR_DEBUG"
_CLICKS = (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort)


def handles_errors(invoke: F) -> F:
    """Decorates ``Group.invoke(self, ctx)``."""

    @functools.wraps(invoke)
    def wrapper(group: click.Group, ctx: click.Context) -> Any:
        try:
            return invoke(group, ctx)
        except ConveyorError as exc:
            fail(exc, as_json=wants_json(ctx))
        except KeyboardInterrupt:
            sys.exit(130)
        except (*_CLICKS, BrokenPipeError):
            raise
        except Exception as exc:
            fail(bug(exc), as_json=wants_json(ctx), kind="InternalError")

    return wrapper  # type: ignore[return-value]


def fail(exc: ConveyorError, *, as_json: bool, kind: str | None = None) -> NoReturn:
    """Print ``exc`` for a person (or as JSON) and exit with its code.

    ``kind`` renames the error in its JSON form: a bug is reported as ``InternalError``,
    as the server reports its own, and is not a class of the (closed) error tree.
    """
    from conveyor.cli import render

    if as_json:
        wire = exc.to_dict()
        if kind is not None:
            wire.update(error=kind, kinds=[kind])
        render.emit_json(wire)
    else:
        render.error(exc)
    sys.exit(exc.exit_code)


def bug(exc: Exception) -> ConveyorError:
    """What the user is told of an exception that is not a ``ConveyorError`` (exit code 1)."""
    if os.environ.get(DEBUG_VARIABLE) == "1":
        import traceback

        traceback.print_exception(exc, file=sys.stderr)
        hint = "please report it, with the traceback above and the command you ran"
    else:
        hint = f"please report it; {DEBUG_VARIABLE}=1 shows the traceback"
    first = str(exc).strip().splitlines()
    detail = f"{type(exc).__name__}: {first[0]}" if first else type(exc).__name__
    return ConveyorError(f"this is a bug in Conveyor: {detail}", hint=hint)
