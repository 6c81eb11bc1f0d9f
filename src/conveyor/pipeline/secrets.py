"""Secrets: resolved at the last moment, handed to one process, masked everywhere else.

A secret's value lives only in the runner's memory and the environment of the job that
declared it. Every string that leaves a job (log lines, outputs, report messages, error
texts) passes through a ``Masker`` first, which masks the value and the encoded forms a tool
would print it in (``core.masking`` lists them, and what is not covered), so a test can
assert no form of the value appears anywhere in a ``RunResult`` or a file Conveyor wrote.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from conveyor.config.pipeline import SecretSource
from conveyor.core.masking import MASK, Masker, StreamMasker
from conveyor.errors import SecretUnavailable

__all__ = ["MASK", "Masker", "StreamMasker", "resolve_secrets"]


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
