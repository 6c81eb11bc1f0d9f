"""``retries:`` of an environment: a canary's failed idempotent requests answered by stable.

The decisions live in ``core.retry``; this is their configuration, checked where it is
written so a mistake names its line: a method list may hold only HTTP method tokens, and
never POST, PATCH or CONNECT, which are not idempotent (retrying one the canary may have
acted on would do it twice).
"""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from conveyor.config.durations import Count, Percentage, PositiveDuration
from conveyor.config.fields import ConfigModel
from conveyor.config.suggest import invalid
from conveyor.core.retry import DEFAULT_METHODS, NEVER_RETRIED, RetryPolicy

_TOKEN = re.compile(r"[A-Z][A-Z-]{0,19}")


class RetryConfig(ConfigModel):
    """How the router answers a canary's failures from the stable version."""

    methods: list[str] = Field(
        default_factory=lambda: list(DEFAULT_METHODS),
        max_length=16,
        description="Idempotent methods whose requests are retried once on the stable version "
        "when the canary answers 5xx or drops the connection before answering. [] turns "
        "retries off (the canary's failures then reach users).",
        examples=[["GET", "HEAD", "OPTIONS"]],
    )
    budget: Percentage = Field(
        0.2,
        description="Retries may add at most this share of the requests seen over `window` "
        "(or `min_retries` per window, whichever is more), so a sick stable is not flooded.",
    )
    min_retries: Count = Field(
        3, ge=0, le=1000, description="Retries allowed per window whatever the traffic."
    )
    window: PositiveDuration = Field(10.0, description="Sliding window of the retry budget.")

    @field_validator("methods")
    @classmethod
    def _idempotent_methods(cls, methods: list[str]) -> list[str]:
        for method in methods:
            if not _TOKEN.fullmatch(method):
                raise invalid(
                    f"{method!r} is not an HTTP method",
                    "write methods in capitals, like GET, HEAD, OPTIONS, PUT, DELETE",
                )
            if method in NEVER_RETRIED:
                raise invalid(
                    f"{method} is not idempotent: retrying it could act twice",
                    "list only idempotent methods (GET, HEAD, OPTIONS, PUT, DELETE)",
                )
        return list(dict.fromkeys(methods))

    def frozen(self) -> RetryPolicy:
        return RetryPolicy(
            methods=tuple(self.methods),
            budget=float(self.budget),
            min_retries=int(self.min_retries),
            window=float(self.window),
        )
