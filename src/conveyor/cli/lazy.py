"""A click group that imports a subcommand's module only when that subcommand runs.

`conveyor --help` must list every command, and `conveyor status` must not pay for what
`conveyor build` needs (the config models, the artifact code, the pipeline runner). So the
group holds a registry, ``name -> Entry("module:attribute", one-line help)``: the help
screen is drawn from the registry alone, and a command's module is imported when the
command is resolved. ``tests/cli/test_structure.py`` checks that each entry's help is its
command's, so the two cannot drift apart.

Options every command accepts wherever they are written (``-C DIR``, ``--file``) are
attached to each command as it is loaded (``shared``), so that `conveyor validate -C DIR`
and `conveyor -C DIR validate` mean the same, and no command module has to remember them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import click


@dataclass(frozen=True)
class Entry:
    """Where a command lives (``package.module:attribute``) and its one-line help."""

    target: str
    help: str

    def load(self) -> click.Command:
        module_name, _, attribute = self.target.partition(":")
        command = getattr(importlib.import_module(module_name), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{self.target} is not a click command")
        return command


class LazyGroup(click.Group):
    """A group whose commands are imported on first use, from ``registry``."""

    def __init__(
        self,
        *args: Any,
        registry: Mapping[str, Entry],
        shared: Callable[[], Sequence[click.Parameter]] = tuple,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.registry = dict(registry)
        self.shared = shared

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.registry})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = self.commands.get(cmd_name)
        if command is not None:
            return command
        entry = self.registry.get(cmd_name)
        if entry is None:
            return None
        command = entry.load()
        _attach(command, self.shared)
        self.add_command(command, cmd_name)
        return command

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except click.exceptions.NoSuchCommand as missing:
            raise click.exceptions.NoSuchCommand(
                missing.command_name, possibilities=self.list_commands(ctx), ctx=ctx
            ) from None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The registry's one-line helps: listing the commands imports none of them."""
        rows = [(name, self.registry[name].help) for name in sorted(self.registry)]
        rows += [
            (name, command.get_short_help_str(formatter.width))
            for name, command in sorted(self.commands.items())
            if name not in self.registry and not command.hidden
        ]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def _attach(command: click.Command, shared: Callable[[], Sequence[click.Parameter]]) -> None:
    """Give ``command`` (and, for a group, each of its commands) the shared options."""
    names = {param.name for param in command.params}
    command.params.extend(p for p in shared() if p.name not in names)
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _attach(sub, shared)
