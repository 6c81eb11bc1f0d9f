"""Scalar value types of conveyor.yaml: durations, percentages and counts.

People write ``30s``, ``2m`` and ``5%`` in config files and the code wants floats, so each
type here is an ``Annotated`` float or int with a parser in front of pydantic. The parsers are
plain functions (usable outside pydantic, e.g. by the CLI for ``--timeout 2m``) and the JSON
Schema attached to each type describes what users *write*, not the float it becomes, so that
editor completion accepts ``30s``.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import BeforeValidator, WithJsonSchema

from conveyor.config.suggest import describe, invalid

_NUMBER = r"\d+(?:\.\d+)?"
_DURATION_RE = re.compile(
    rf"^(?:(?P<h>{_NUMBER})\s*h)?(?:(?P<m>{_NUMBER})\s*m)?(?:(?P<s>{_NUMBER})\s*s)?"
    rf"(?:(?P<ms>{_NUMBER})\s*ms)?$"
)
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
DURATION_PATTERN = (
    r"^(?:\d+(?:\.\d+)?|(?=\d)(?:\d+(?:\.\d+)?\s*h)?(?:\d+(?:\.\d+)?\s*m)?"
    r"(?:\d+(?:\.\d+)?\s*s)?(?:\d+(?:\.\d+)?\s*ms)?)$"
)
"""The duration syntax for JSON Schema (ECMA-262 regex: no named groups)."""
DURATION_HINT = "write a duration like 500ms, 30s, 2m, 1h or 1m30s (a bare number means seconds)"

_PERCENT_RE = re.compile(rf"^(?P<n>{_NUMBER})\s*%$")
PERCENT_PATTERN = r"^\d+(?:\.\d+)?\s*%$"
_WHOLE_PERCENT_RE = re.compile(r"^(?P<n>\d+)\s*%$")
WHOLE_PERCENT_PATTERN = r"^\d+\s*%$"


def parse_duration(value: object, *, positive: bool = False) -> float:
    """Seconds from ``"500ms"``, ``"30s"``, ``"2m"``, ``"1h"``, ``"1m30s"`` or a bare number.

    Units must appear largest first and at most once, which rejects ambiguous spellings
    such as ``30s1m``; a space may separate a number from its unit (``10 m``), as pipeline
    timeouts always allowed. ``positive`` additionally rejects zero, for timeouts and periods.
    """
    seconds = _seconds(value)
    if seconds is None:
        raise invalid(f"expected a duration like 30s or 2m, got {describe(value)}", DURATION_HINT)
    if seconds < 0:
        raise invalid(f"a duration cannot be negative, got {describe(value)}", DURATION_HINT)
    if positive and seconds == 0:
        raise invalid("this duration must be longer than 0", "use a positive value such as 1s")
    return seconds


def _seconds(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:
            return None
        return seconds if math.isfinite(seconds) else None
    if not isinstance(value, str):
        return None
    text = value.strip()
    negative = text.startswith("-")
    text = text.removeprefix("-").strip()
    if re.fullmatch(_NUMBER, text):
        seconds = float(text)
    else:
        match = _DURATION_RE.match(text)
        if not text or match is None:
            return None
        seconds = sum(
            float(amount) * _UNIT_SECONDS[unit]
            for unit, amount in match.groupdict().items()
            if amount is not None
        )
    if not math.isfinite(seconds):
        return None
    return -seconds if negative else seconds


def parse_percentage(value: object) -> float:
    """A fraction in [0, 1] from ``"5%"`` or a number between 0 and 1."""
    hint = "write a percentage like 5% or a fraction between 0 and 1 such as 0.05"
    if isinstance(value, int | float) and not isinstance(value, bool):
        fraction = float(value) if -2 <= value <= 2 else math.inf
        if 0.0 <= fraction <= 1.0:
            return fraction
        raise invalid(f"expected a fraction between 0 and 1, got {describe(value)}", hint)
    if isinstance(value, str):
        match = _PERCENT_RE.match(value.strip())
        if match is not None:
            fraction = float(match["n"]) / 100.0
            if fraction <= 1.0:
                return fraction
            raise invalid(f"a percentage cannot exceed 100%, got {describe(value)}", hint)
    raise invalid(f"expected a percentage like 5%, got {describe(value)}", hint)


def parse_int_or_percent(value: object) -> int | str:
    """A count of instances (``2``) or a whole percentage of the desired count (``"25%"``).

    Percentages stay strings (normalised to ``"25%"``) because what they resolve to depends
    on the instance count, which is only known per environment; see
    ``ProjectConfig.rolling_counts``.
    """
    hint = "write a whole number of instances such as 1, or a percentage such as 25%"
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise invalid(f"cannot be negative, got {value}", hint)
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return int(text)
        match = _WHOLE_PERCENT_RE.match(text)
        if match is not None:
            percent = int(match["n"])
            if percent > 100:
                raise invalid(f"a percentage cannot exceed 100%, got {describe(value)}", hint)
            return f"{percent}%"
    raise invalid(f"expected a whole number or a percentage like 25%, got {describe(value)}", hint)


def resolve_int_or_percent(value: int | str, total: int, *, round_up: bool) -> int:
    """An absolute count from ``parse_int_or_percent``'s output, Kubernetes rounding."""
    if isinstance(value, int):
        return value
    percent = int(value.rstrip("%").strip())
    return -(-percent * total // 100) if round_up else percent * total // 100


def reject_bool(value: object) -> object:
    """Stop pydantic's lax mode from reading ``instances: true`` as 1."""
    if isinstance(value, bool):
        raise invalid(f"expected a whole number, got {describe(value)}")
    return value


def _duration(value: Any) -> float:
    return parse_duration(value)


def _positive_duration(value: Any) -> float:
    return parse_duration(value, positive=True)


_DURATION_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "number", "minimum": 0},
        {"type": "string", "pattern": DURATION_PATTERN},
    ],
    "examples": ["30s", "2m", "1m30s", "500ms"],
}

Duration = Annotated[float, BeforeValidator(_duration), WithJsonSchema(_DURATION_SCHEMA)]
"""Seconds >= 0, written as ``30s``, ``2m``, ``1m30s``, ``500ms`` or a number."""

PositiveDuration = Annotated[
    float, BeforeValidator(_positive_duration), WithJsonSchema(_DURATION_SCHEMA)
]
"""Seconds > 0: timeouts, periods and windows, where zero would mean "never" or "always"."""

Percentage = Annotated[
    float,
    BeforeValidator(parse_percentage),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0, "maximum": 1},
                {"type": "string", "pattern": PERCENT_PATTERN},
            ],
            "examples": ["5%", 0.05],
        }
    ),
]
"""A fraction in [0, 1], written as ``5%`` or ``0.05``."""

IntOrPercent = Annotated[
    int | str,
    BeforeValidator(parse_int_or_percent),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": WHOLE_PERCENT_PATTERN},
            ],
            "examples": [1, "25%"],
        }
    ),
]
"""An instance count >= 0 or a whole percentage of the desired count."""

Count = Annotated[int, BeforeValidator(reject_bool)]
"""An integer that refuses booleans (YAML's ``yes`` is not a number)."""
