"""Secrets: resolved at the last moment, handed to one process, masked everywhere else.

A secret's value lives only in the runner's memory and the job's environment. Every string
that leaves a job (log lines, outputs, report messages, error texts) passes through a
``Masker`` first, so a test can assert the value appears nowhere in a ``RunResult``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from conveyor.errors import ConveyorError
from conveyor.pipeline.model import SecretSource

MASK = "***"


class SecretUnavailable(ConveyorError):
    """A secret's source (an environment variable or a file) is missing."""

    exit_code = 2


def resolve_secrets(
    job: str, secrets: Mapping[str, SecretSource], environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    env = os.environ if environ is None else environ
    values: dict[str, str] = {}
    for name, source in secrets.items():
        if source.env is not None:
            if source.env not in env:
                raise SecretUnavailable(
                    f"job '{job}': secret {name} reads ${source.env}, which is not set",
                    hint=f"export {source.env} before running the pipeline",
                )
            values[name] = env[source.env]
        else:
            path = Path(source.file or "")
            try:
                values[name] = path.read_text().rstrip("\n")
            except OSError as error:
                raise SecretUnavailable(
                    f"job '{job}': secret {name} reads {path}: {error.strerror}",
                    hint="create the file or point the secret at another one",
                ) from None
    return values


class Masker:
    """Replaces every secret value (and each line of a multi-line one) with ``***``."""

    def __init__(self, values: Iterable[str]) -> None:
        pieces: set[str] = set()
        for value in values:
            if value:
                pieces.add(value)
                pieces.update(line for line in value.splitlines() if line.strip())
        # Longest first, so a secret that contains another is masked whole.
        self._pieces = sorted(pieces, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for piece in self._pieces:
            if piece in text:
                text = text.replace(piece, MASK)
        return text

    def __bool__(self) -> bool:
        return bool(self._pieces)
