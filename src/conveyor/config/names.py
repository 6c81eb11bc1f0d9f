"""Names that several parts of conveyor.yaml spell the same way: variables and users.

Service config, pipeline ``env:`` and ``secrets:`` all become process environment variables,
so they share one rule, one message and one JSON Schema pattern; ``run_as:`` is written at
the top, per service and in the pipeline. This module sits below both ``fields`` and
``pipeline`` so that neither has to import the other for it.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, WithJsonSchema

from conveyor.config.suggest import describe, invalid
from conveyor.run_as import EXAMPLE, RUN_AS_PATTERN

ENV_VAR_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"


def _env_var(value: str) -> str:
    if not re.fullmatch(ENV_VAR_PATTERN, value):
        raise invalid(
            f"{describe(value)} is not a valid environment variable name",
            "use letters, digits and '_', not starting with a digit (e.g. GREETING)",
        )
    return value


EnvVar = Annotated[
    str,
    AfterValidator(_env_var),
    WithJsonSchema({"type": "string", "pattern": ENV_VAR_PATTERN}),
]
"""A name a process can read from its environment: ``GREETING``, ``_PRIVATE``."""


def _run_as(value: str) -> str:
    if not re.fullmatch(RUN_AS_PATTERN, value):
        raise invalid(
            f"{describe(value)} is not a user name",
            f"write a user of the host, optionally with a group: {EXAMPLE} or {EXAMPLE}:{EXAMPLE}",
        )
    return value


RunAs = Annotated[
    str,
    AfterValidator(_run_as),
    WithJsonSchema({"type": "string", "pattern": RUN_AS_PATTERN, "examples": [EXAMPLE]}),
]
"""``user`` or ``user:group``. Only the spelling is checked here: the account belongs to the
host that starts the process, which need not be the one validating the file."""
