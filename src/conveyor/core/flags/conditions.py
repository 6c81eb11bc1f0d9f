"""Operators on context attributes, checked once when a flag is defined, compiled to predicates.

A condition names an attribute of the evaluation context, an operator and its values. Every
check that can fail (an unknown operator, a number that is not one, a version that is not
semver, a dangerous regex) fails when the flag is *defined* — in conveyor.yaml, through the
API — never while a request is being served. What remains at evaluation time is a closure
over already-parsed values.

Semantics, close to Unleash's constraint operators:

* string operators compare text (booleans as ``true``/``false``, numbers as written);
  ``in``/``eq``/``starts_with``/``ends_with``/``contains`` hold when *any* value does;
* ``lt``/``lte``/``gt``/``gte`` compare numbers (an attribute that is not a number fails);
* ``semver_*`` compare versions by semver 2.0 precedence (pre-releases sort before their
  release; build metadata is ignored);
* ``matches`` is a regular-expression search, guarded: at most ``MAX_PATTERN`` characters,
  no back-references, no quantified group that itself holds a quantifier (the shapes that
  backtrack exponentially, e.g. ``(a+)+``), and attribute values longer than
  ``MAX_SUBJECT`` never match. Python's ``re`` has no timeout, so the pattern is what must be
  safe;
* an attribute missing from the context fails every operator except ``neq`` and
  ``not_in``, which hold (as Unleash's NOT_IN does).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any

Scalar = str | int | float | bool
Predicate = Callable[[Mapping[str, Any]], bool]

STRING_OPS = ("eq", "neq", "in", "not_in", "starts_with", "ends_with", "contains")
NUMBER_OPS = ("lt", "lte", "gt", "gte")
SEMVER_OPS = ("semver_eq", "semver_lt", "semver_lte", "semver_gt", "semver_gte")
REGEX_OPS = ("matches",)
OPERATORS = (*STRING_OPS, *NUMBER_OPS, *SEMVER_OPS, *REGEX_OPS)
SINGLE_VALUE = (*NUMBER_OPS, *SEMVER_OPS, *REGEX_OPS)

MAX_PATTERN = 256
MAX_SUBJECT = 1024

_NESTED_QUANTIFIER = re.compile(r"\((?:[^()\\]|\\.)*(?:[+*}]|\?\))(?:[^()\\]|\\.)*\)\s*[+*{?]")
_BACKREFERENCE = re.compile(r"\\[1-9]|\(\?P=")
_SEMVER = re.compile(
    r"v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*)(?:\.(?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*))*))?"
    r"(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?"
)


class ConditionError(ValueError):
    """A condition that cannot be used; ``hint`` says how to write it."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


def text(value: object) -> str:
    """An attribute or value as the string operators see it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def number(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and len(value) <= 64:
        try:
            return float(value)
        except ValueError:
            return None
    return None


SemverKey = tuple[int, int, int, int, tuple[tuple[int, int | str], ...]]


def semver_key(value: object) -> SemverKey | None:
    """A sort key with semver 2.0 precedence, or None when ``value`` is not a version."""
    if not isinstance(value, str) or len(value) > 256:
        return None
    return _semver_parsed(value)


@lru_cache(maxsize=4096)
def _semver_parsed(value: str) -> SemverKey | None:
    """Parsed once per distinct text: app versions repeat across millions of requests."""
    found = _SEMVER.fullmatch(value.strip())
    if found is None:
        return None
    major, minor, patch, pre = found.groups()
    if pre is None:
        return (int(major), int(minor), int(patch), 1, ())
    parts = tuple((0, int(p)) if p.isdigit() else (1, p) for p in pre.split("."))
    return (int(major), int(minor), int(patch), 0, parts)


def check_pattern(pattern: str) -> re.Pattern[str]:
    """Compile a ``matches`` pattern that is short and cannot backtrack exponentially."""
    if len(pattern) > MAX_PATTERN:
        raise ConditionError(
            f"the pattern is {len(pattern)} characters long, more than {MAX_PATTERN}",
            "match a shorter pattern, or use starts_with/ends_with/in",
        )
    if _BACKREFERENCE.search(pattern):
        raise ConditionError(
            f"the pattern {pattern!r} uses a back-reference", "back-references are not allowed"
        )
    if _NESTED_QUANTIFIER.search(pattern):
        raise ConditionError(
            f"the pattern {pattern!r} repeats a group that itself repeats (like (a+)+), which "
            "can take exponential time",
            "remove the inner or the outer repetition",
        )
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ConditionError(
            f"the pattern {pattern!r} is not a valid regular expression: {exc}",
            "write a Python regular expression",
        ) from None


def check(op: str, values: Sequence[Scalar]) -> None:
    """Raise ``ConditionError`` unless ``op`` with ``values`` is a usable condition."""
    compile_condition("x", op, values)


def compile_condition(attribute: str, op: str, values: Sequence[Scalar]) -> Predicate:
    """The predicate of one condition, its values parsed once."""
    if op not in OPERATORS:
        raise ConditionError(f"unknown operator {op!r}", "one of: " + ", ".join(OPERATORS))
    if not values:
        raise ConditionError(f"{op} needs at least one value", "values: [VALUE, ...]")
    if op in SINGLE_VALUE and len(values) != 1:
        raise ConditionError(f"{op} takes exactly one value, got {len(values)}", "value: VALUE")
    if op in STRING_OPS:
        return _string(attribute, op, tuple(text(v) for v in values))
    if op in NUMBER_OPS:
        limit = number(values[0])
        if limit is None:
            raise ConditionError(f"{op} compares numbers; {values[0]!r} is not one", "value: 42")
        return _numeric(attribute, op, limit)
    if op in SEMVER_OPS:
        version = semver_key(values[0])
        if version is None:
            raise ConditionError(
                f"{values[0]!r} is not a semantic version", "write MAJOR.MINOR.PATCH, e.g. 2.1.0"
            )
        return _semver(attribute, op, version)
    if not isinstance(values[0], str):
        raise ConditionError("matches takes a pattern (text)", "value: '^[a-z]+@example\\.com$'")
    return _regex(attribute, check_pattern(values[0]))


def _string(attribute: str, op: str, values: tuple[str, ...]) -> Predicate:
    members = frozenset(values)
    if op in ("eq", "in"):

        def member(ctx: Mapping[str, Any]) -> bool:
            value = ctx.get(attribute)
            if value is None:
                return False
            return (value if value.__class__ is str else text(value)) in members

        return member
    if op in ("neq", "not_in"):

        def outside(ctx: Mapping[str, Any]) -> bool:
            value = ctx.get(attribute)
            return value is None or text(value) not in members

        return outside
    if op in ("starts_with", "ends_with"):
        # str.startswith/endswith take a tuple: one C call tries every value.
        method = str.startswith if op == "starts_with" else str.endswith

        def affix(ctx: Mapping[str, Any]) -> bool:
            value = ctx.get(attribute)
            if value is None:
                return False
            return method(value if value.__class__ is str else text(value), values)

        return affix
    test = str.__contains__

    def any_of(ctx: Mapping[str, Any]) -> bool:
        value = ctx.get(attribute)
        if value is None:
            return False
        subject = text(value)
        return any(test(subject, v) for v in values)

    return any_of


_COMPARE: Mapping[str, Callable[[Any, Any], bool]] = {
    "lt": lambda a, b: a < b,
    "lte": lambda a, b: a <= b,
    "gt": lambda a, b: a > b,
    "gte": lambda a, b: a >= b,
    "eq": lambda a, b: a == b,
}


def _numeric(attribute: str, op: str, limit: float) -> Predicate:
    compare = _COMPARE[op]

    def numeric(ctx: Mapping[str, Any]) -> bool:
        value = number(ctx.get(attribute))
        return value is not None and compare(value, limit)

    return numeric


def _semver(attribute: str, op: str, version: SemverKey) -> Predicate:
    compare = _COMPARE[op.removeprefix("semver_")]

    def semver(ctx: Mapping[str, Any]) -> bool:
        value = semver_key(ctx.get(attribute))
        return value is not None and compare(value, version)

    return semver


def _regex(attribute: str, pattern: re.Pattern[str]) -> Predicate:
    search = pattern.search

    def matches(ctx: Mapping[str, Any]) -> bool:
        value = ctx.get(attribute)
        if value is None:
            return False
        subject = text(value)
        return len(subject) <= MAX_SUBJECT and search(subject) is not None

    return matches
