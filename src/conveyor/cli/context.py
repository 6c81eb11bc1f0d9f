"""What every command is given: the project it works on, found without reading the config.

A command that only talks to the server needs the project's directory (where
`.conveyor/server.json` is) and nothing of what conveyor.yaml says, so finding the file is
a few ``stat`` calls, not a parse: the config models (pydantic, ~50 ms) are imported by
``project()``, for the commands that build, validate or run a pipeline. A broken
conveyor.yaml therefore never stops `conveyor status` from showing what runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from conveyor.errors import ConfigError, ConfigProblem
from conveyor.layout import Layout, find_config

if TYPE_CHECKING:
    from conveyor.cli.client import ApiClient
    from conveyor.config.loader import LoadedProject


class Context:
    """``-C DIR`` and ``--file``, wherever on the command line they were given."""

    def __init__(self, directory: Path = Path(), file: Path | None = None) -> None:
        self._directory = directory
        self.file = file
        self._project: LoadedProject | None = None

    @property
    def directory(self) -> Path:
        return self._directory.resolve()

    @directory.setter
    def directory(self, value: Path) -> None:
        self._directory = value
        self._project = None

    def set_file(self, value: Path) -> None:
        self.file = value
        self._project = None

    def config_file(self) -> Path:
        """The config file this command is about; its directory is the project root."""
        if self.file is not None:
            path = self.file if self.file.is_absolute() else self.directory / self.file
            if not path.exists():
                raise ConfigError(
                    [ConfigProblem(str(path), None, "(file)", "no such file", "check --file")]
                )
            return path.resolve()
        return find_config(self.directory).resolve()

    @property
    def root(self) -> Path:
        return self.config_file().parent

    @property
    def layout(self) -> Layout:
        return Layout(self.root)

    def project(self) -> LoadedProject:
        """The validated config (imports the config models: for commands that need them)."""
        if self._project is None:
            from conveyor.config.loader import load_project

            self._project = load_project(self.config_file())
        return self._project

    def client(self, *, timeout: float = 30.0) -> ApiClient:
        """The API of this project's running server; none running is ``ServerUnavailable``."""
        from conveyor.cli.client import ApiClient

        return ApiClient.for_project(self.layout, timeout=timeout)
