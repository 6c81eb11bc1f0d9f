"""The one exception tree Conveyor raises to its users — all of it, in this file.

Every error a user can cause (a broken config, an unknown service, a refused deploy) is a
``ConveyorError`` carrying a message that names the thing and a hint that names the fix. The
CLI prints ``message`` and ``hint`` and exits with ``exit_code``; the API maps ``http_status``
and returns both as JSON. Anything that is not a ``ConveyorError`` is a bug: the API answers
500 with a short message and logs the traceback, the CLI says it is a bug.

The tree is closed: every subclass is defined here, so the CLI (which must start fast and
imports nothing else of Conveyor's to talk to a server) can turn any answer back into the
error the server raised, exit code included (``from_wire``). ``tests/test_errors.py`` walks
the tree and round-trips each class through the real API.

    ConveyorError                 exit  HTTP
    ├── InvalidInput                2   422  what was written cannot be used as written
    │   ├── ConfigError             2   422  conveyor.yaml (file, line, field, hint)
    │   ├── PipelineError           2   422  a pipeline that cannot run: cycles, unknown needs
    │   ├── ExpressionError         2   422  a condition that does not parse or evaluate
    │   ├── TemplateArgumentError   2   422  an analysis template placeholder with no value
    │   └── UsageError              2   400  a command line or API request that makes no sense
    ├── NotFound                    3   404  unknown service, environment, release, artifact
    ├── Conflict                    4   409  a rollout in progress, a stale write
    │   ├── AlreadyDeployed         4   409  the environment already runs exactly this
    │   └── Fenced                  4   409  a server acting for an environment it lost the lease of
    ├── Refused                     5   403  a deploy that breaks a principle (no exit, bad digest)
    ├── BuildFailed                 6   422  the build command failed or its outputs are missing
    ├── ServerUnavailable           7   503  the CLI cannot reach `conveyor server`
    ├── StoreError                  8   500  the state database cannot be opened or written
    ├── Unavailable                 9   503  a tool or part Conveyor drives is missing or down
    │   ├── HAProxyUnavailable      9   503
    │   ├── GateUnavailable         9   503  a gate's tool is not installed
    │   │   └── GatePluginError     9   503  a gate plugin's entry point does not load
    │   └── SecretUnavailable       9   503  a declared secret's source is missing
    ├── LaunchFailed                1   422  an instance could not be started at all
    ├── Unauthenticated            12   401  no token, or one that is unknown, expired or revoked
    └── Forbidden                  13   403  the caller's role or scope does not allow this

Exit codes 10 (rolled back) and 11 (failed) are not errors: they are the outcome of a
rollout followed with ``--wait`` (see docs/cli.md).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class ConveyorError(Exception):
    """Base of every user-facing error: a message and a hint that says what to do."""

    exit_code = 1
    http_status = 400

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def to_dict(self) -> dict[str, object]:
        """The wire form: the class and its ancestors (so an older client still maps it)."""
        kinds = [
            cls.__name__
            for cls in type(self).__mro__
            if isinstance(cls, type) and issubclass(cls, ConveyorError) and not _private(cls)
        ]
        return {
            "error": kinds[0],
            "kinds": kinds,
            "message": self.message,
            "hint": self.hint,
            "exit_code": self.exit_code,
        }


def _private(cls: type) -> bool:
    return cls.__name__.startswith("_")


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

    def to_dict(self) -> dict[str, object]:
        return {
            "file": self.file,
            "line": self.line,
            "field": self.field,
            "message": self.message,
            "hint": self.hint,
        }


class InvalidInput(ConveyorError):
    """What the user wrote (a file, a command line, a request) cannot be used as written."""

    exit_code = 2
    http_status = 422


class ConfigError(InvalidInput):
    """A config file is unreadable or invalid; carries every problem found, not just the first."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        first = problems[0]
        super().__init__(
            "\n".join(p.render() for p in problems),
            hint=first.hint if len(problems) == 1 else f"fix the {len(problems)} problems above",
        )

    def to_dict(self) -> dict[str, object]:
        return {**super().to_dict(), "problems": [p.to_dict() for p in self.problems]}


class PipelineError(InvalidInput):
    """A pipeline that cannot run as written: cycles, unknown needs, bad conditions."""


class ExpressionError(InvalidInput):
    """A condition that does not parse, or cannot be evaluated on the values it was given.

    ``reason`` is the bare explanation, ``position`` the 0-based offset it points at; the
    message adds the expression and a caret under that column.
    """

    def __init__(self, reason: str, position: int, text: str = "", hint: str | None = None) -> None:
        self.reason = reason
        self.position = position
        self.text = text
        super().__init__(_point(reason, position, text), hint)


def _point(reason: str, position: int, text: str) -> str:
    if not text:
        return reason
    shown = "".join(" " if c.isspace() else c for c in text)
    return f"{reason} (column {position + 1})\n    {shown}\n    {' ' * position}^"


class TemplateArgumentError(InvalidInput):
    """A template placeholder with no value: the release cannot be analysed as written."""


class UsageError(InvalidInput):
    """A command line or API request that makes no sense (a missing field, a bad value)."""

    http_status = 400


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


class Fenced(Conflict):
    """A server that lost an environment's lease tried to act for it: its epoch is older
    than the newest one the store, router or runtime has seen (core/leases.py). The write
    is refused and that server stops driving the environment."""


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


class Unavailable(ConveyorError):
    """A tool or part Conveyor drives (HAProxy, a gate's scanner, a secret) is missing or down."""

    exit_code = 9
    http_status = 503


class HAProxyUnavailable(Unavailable):
    """HAProxy is missing, or refused to start or reload."""


class GateUnavailable(Unavailable):
    """A gate's tool is not installed; the fix is installing it, so the hint says how."""


class GatePluginError(GateUnavailable):
    """A plugin's entry point does not load; a GateUnavailable so the runner fails only its job."""


class SecretUnavailable(Unavailable):
    """A secret's source (an environment variable or a file) is missing."""


class LaunchFailed(ConveyorError):
    """An instance could not be started at all (missing artifact dir or executable)."""

    http_status = 422


class Unauthenticated(ConveyorError):
    """The API was called without a valid token (missing, unknown, expired or revoked)."""

    exit_code = 12
    http_status = 401


class Forbidden(ConveyorError):
    """The caller is known, but its role or environments do not allow what it asked."""

    exit_code = 13
    http_status = 403


def error_classes() -> dict[str, type[ConveyorError]]:
    """Every public class of the tree by name, ``ConveyorError`` included."""
    found: dict[str, type[ConveyorError]] = {}
    pending: list[type[ConveyorError]] = [ConveyorError]
    while pending:
        cls = pending.pop()
        if not _private(cls) and cls.__module__ == __name__:
            found[cls.__name__] = cls
        pending.extend(cls.__subclasses__())
    return found


def from_wire(body: Mapping[str, Any], status: int) -> ConveyorError:
    """The error an API answer describes, as the class the server raised (or its nearest
    known ancestor), with the server's message, hint and exit code."""
    known = error_classes()
    names = body.get("kinds") or [body.get("error")]
    cls = next((known[n] for n in names if isinstance(n, str) and n in known), ConveyorError)
    message = str(body.get("message") or f"the server answered {status}")
    hint = body.get("hint")
    hint = str(hint) if hint is not None else None
    problems = body.get("problems")
    if issubclass(cls, ConfigError) and isinstance(problems, list) and problems:
        return cls(
            [
                ConfigProblem(
                    file=str(p.get("file", "")),
                    line=p.get("line") if isinstance(p.get("line"), int) else None,
                    field=str(p.get("field", "")),
                    message=str(p.get("message", "")),
                    hint=p.get("hint"),
                )
                for p in problems
                if isinstance(p, Mapping)
            ]
        )
    error = cls.__new__(cls)
    ConveyorError.__init__(error, message, hint)
    code = body.get("exit_code")
    if isinstance(code, int) and code != cls.exit_code:
        error.exit_code = code
    return error
