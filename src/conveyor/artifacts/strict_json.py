"""Reading records that crossed a trust boundary: exact types, bounded sizes, no extras.

Build facts are produced by whoever runs a build (a laptop, a CI job) and signed by the
server, so the server must not sign what it did not check. ``Fields`` reads one JSON object
field by field: every field has one type (a boolean is not a number, a number is not a
string), every string and list has a ceiling, every number a range, and a field the writer
could not have sent is refused rather than ignored -- a typo or a newer client's field
must not vanish from what gets signed without anyone noticing.

A shape problem is a ``UsageError`` naming the field by its path (``build.source.commit``)
and what it must be; the caller decides what else (a digest's algorithm, say) is a policy
refusal.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection, Mapping
from typing import Any

from conveyor.errors import UsageError

COMMIT_PATTERN = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
"""A git object id: sha1 (40 hex) or sha256 (64 hex) repositories."""
HINT = "send what conveyor.artifacts.provenance.BuildFacts.to_json() produces, unchanged"
MAX_NESTING = 16


class Fields:
    """One JSON object from an untrusted source, read one typed field at a time."""

    def __init__(self, data: object, where: str, allowed: Collection[str]) -> None:
        if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
            raise UsageError(f"'{where}' must be a JSON object, got {_kind(data)}", hint=HINT)
        unknown = sorted(set(data) - set(allowed))
        if unknown:
            shown = ", ".join(repr(k[:40]) for k in unknown[:5])
            raise UsageError(
                f"'{where}' has fields no Conveyor client sends: {shown}",
                hint=f"{HINT}; known fields: {', '.join(sorted(allowed))}",
            )
        self._data: dict[str, Any] = data
        self.where = where

    def path(self, key: str) -> str:
        return f"{self.where}.{key}"

    def raw(self, key: str) -> object:
        return self._data.get(key)

    def text(
        self,
        key: str,
        *,
        max_length: int,
        pattern: re.Pattern[str] | None = None,
        optional: bool = False,
    ) -> str | None:
        value = self._data.get(key)
        if value is None and optional:
            return None
        if not isinstance(value, str) or not value or len(value) > max_length:
            raise self._wrong(key, f"a non-empty string of at most {max_length} characters")
        if "\x00" in value:
            raise self._wrong(key, "a string without NUL characters")
        if pattern is not None and not pattern.fullmatch(value):
            raise self._wrong(key, f"a string matching {pattern.pattern}")
        return value

    def required_text(
        self, key: str, *, max_length: int, pattern: re.Pattern[str] | None = None
    ) -> str:
        value = self.text(key, max_length=max_length, pattern=pattern)
        assert value is not None
        return value

    def flag(self, key: str, *, optional: bool = False) -> bool | None:
        value = self._data.get(key)
        if value is None and optional:
            return None
        if not isinstance(value, bool):
            raise self._wrong(key, "true or false")
        return value

    def integer(self, key: str, *, low: int, high: int) -> int:
        value = self._data.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self._wrong(key, f"a whole number from {low} to {high}")
        return value

    def number(self, key: str, *, low: float, high: float) -> float:
        value = self._data.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._wrong(key, f"a number from {low:g} to {high:g}")
        number = float(value)
        if not math.isfinite(number) or not low <= number <= high:
            raise self._wrong(key, f"a number from {low:g} to {high:g}")
        return number

    def texts(
        self, key: str, *, max_items: int, max_length: int, optional: bool = False
    ) -> tuple[str, ...] | None:
        value = self._data.get(key)
        if value is None and optional:
            return None
        expected = (
            f"a list of at most {max_items} non-empty strings "
            f"of at most {max_length} characters each"
        )
        if not isinstance(value, list) or len(value) > max_items:
            raise self._wrong(key, expected)
        if not all(
            isinstance(item, str) and item and len(item) <= max_length and "\x00" not in item
            for item in value
        ):
            raise self._wrong(key, expected)
        return tuple(value)

    def document(self, key: str, *, max_bytes: int) -> dict[str, Any] | None:
        """An optional free-form JSON object, bounded by its encoded size and nesting."""
        value = self._data.get(key)
        if value is None:
            return None
        expected = f"a JSON object of at most {max_bytes} bytes, nested at most {MAX_NESTING} deep"
        if not isinstance(value, dict) or not _plain_json(value, MAX_NESTING):
            raise self._wrong(key, expected)
        if len(json.dumps(value, separators=(",", ":")).encode()) > max_bytes:
            raise self._wrong(key, expected)
        return value

    def _wrong(self, key: str, expected: str) -> UsageError:
        got = self._data.get(key)
        return UsageError(
            f"'{self.path(key)}' must be {expected}, got {_kind(got)}",
            hint=HINT,
        )


def _plain_json(value: object, depth: int) -> bool:
    """Only what JSON itself can say: objects with string keys, arrays, scalars, finite numbers."""
    if depth < 0:
        return False
    if value is None or isinstance(value, bool | str | int):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_plain_json(item, depth - 1) for item in value)
    if isinstance(value, Mapping):
        return all(isinstance(k, str) and _plain_json(v, depth - 1) for k, v in value.items())
    return False


def _kind(value: object) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"the number {value!r}"[:60]
    if isinstance(value, str):
        return f"a string of {len(value)} characters"
    if isinstance(value, list):
        return f"a list of {len(value)} items"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
