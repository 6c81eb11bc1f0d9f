"""The one exception tree Conveyor raises to its users.

Every error a user can cause (a broken config, an unknown service, a refused deploy) is a
``ConveyorError`` carrying a message that names the thing and a hint that names the fix. The
CLI prints ``message`` and ``hint`` and exits with ``exit_code``; the API maps ``http_status``
and returns both as JSON. Anything that is not a ``ConveyorError`` is a bug and may show a
traceback.

    ConveyorError
    ├── ConfigError            a conveyor.yaml problem: file, line, field
    ├── NotFound               unknown service, environment, release, artifact
    ├── Conflict               a rollout in progress, an artifact that would be overwritten
    ├── Refused                a deploy that breaks a principle (no exit, bad digest)
    ├── BuildFailed            the build command failed or its outputs are missing
    ├── ServerUnavailable      the CLI cannot reach `conveyor server`
    └── StoreError             the state database cannot be opened or migrated
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


class ConveyorError(Exception):
    """Base of every user-facing error: a message and a hint that says what to do."""

    exit_code = 1
    http_status = 400

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def to_dict(self) -> dict[str, object]:
        return {"error": type(self).__name__, "message": self.message, "hint": self.hint}


@dataclass(frozen=True)
class ConfigProblem:
    """One problem found in a config file, located well enough to jump to it."""

    file: str
    line: int | None
    field: str
    message: str
    hint: str | None = None
    column: int | None = dataclasses.field(default=None, compare=False)

    def render(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        text = f"{where}: {self.field}: {self.message}"
        return text if not self.hint else f"{text}\n    hint: {self.hint}"


class ConfigError(ConveyorError):
    """A config file is unreadable or invalid; carries every problem found, not just the first."""

    exit_code = 2
    http_status = 422

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        first = problems[0]
        super().__init__(
            "\n".join(p.render() for p in problems),
            hint=first.hint if len(problems) == 1 else f"fix the {len(problems)} problems above",
        )

    def to_dict(self) -> dict[str, object]:
        return {
            **super().to_dict(),
            "problems": [
                {
                    "file": p.file,
                    "line": p.line,
                    "field": p.field,
                    "message": p.message,
                    "hint": p.hint,
                }
                for p in self.problems
            ],
        }


class NotFound(ConveyorError):
    exit_code = 3
    http_status = 404


class Conflict(ConveyorError):
    exit_code = 4
    http_status = 409


class AlreadyDeployed(Conflict):
    """The environment already runs exactly this artifact with this config: nothing to do.

    A conflict for a person typing `conveyor deploy` (they probably meant something else), but
    a pipeline re-run on unchanged code treats it as the desired state reached.
    """


class Refused(ConveyorError):
    exit_code = 5
    http_status = 403


class BuildFailed(ConveyorError):
    exit_code = 6
    http_status = 422


class ServerUnavailable(ConveyorError):
    exit_code = 7
    http_status = 503


class StoreError(ConveyorError):
    exit_code = 8
    http_status = 500
