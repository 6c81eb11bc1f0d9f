"""Operators on context attributes, the guarded regex and semver precedence: tables."""

from __future__ import annotations

from typing import Any

import pytest

from conveyor.core.flags.conditions import (
    MAX_SUBJECT,
    ConditionError,
    check_pattern,
    compile_condition,
    semver_key,
)


@pytest.mark.parametrize(
    ("op", "values", "ctx", "holds"),
    [
        ("eq", ["gold"], {"plan": "gold"}, True),
        ("eq", ["gold"], {"plan": "silver"}, False),
        ("eq", ["gold"], {}, False),
        ("neq", ["gold"], {}, True),
        ("neq", ["gold"], {"plan": "gold"}, False),
        ("in", ["gold", "silver"], {"plan": "silver"}, True),
        ("not_in", ["gold", "silver"], {"plan": "bronze"}, True),
        ("not_in", ["gold"], {}, True),
        ("in", ["true"], {"plan": True}, True),
        ("in", ["42"], {"plan": 42}, True),
        ("starts_with", ["ab", "x"], {"plan": "xyz"}, True),
        ("ends_with", ["@example.com"], {"plan": "a@example.com"}, True),
        ("ends_with", ["@example.com"], {"plan": "a@example.org"}, False),
        ("contains", ["mid"], {"plan": "amidst"}, True),
        ("lt", [10], {"plan": 9.5}, True),
        ("lt", [10], {"plan": "9"}, True),
        ("lt", [10], {"plan": 10}, False),
        ("lte", [10], {"plan": 10}, True),
        ("gt", [10], {"plan": "eleven"}, False),
        ("gte", ["1e3"], {"plan": 1000}, True),
        ("gt", [0], {"plan": True}, False),
        ("semver_gte", ["2.1.0"], {"plan": "2.10.0"}, True),
        ("semver_lt", ["2.1.0"], {"plan": "2.1.0-rc.1"}, True),
        ("semver_gt", ["2.1.0-rc.2"], {"plan": "2.1.0-rc.10"}, True),
        ("semver_gt", ["2.1.0-alpha"], {"plan": "2.1.0-1"}, False),
        ("semver_eq", ["2.1.0"], {"plan": "v2.1.0+build.5"}, True),
        ("semver_lte", ["1.0.0"], {"plan": "not-a-version"}, False),
        ("matches", [r"^[a-z]+@corp\.com$"], {"plan": "dana@corp.com"}, True),
        ("matches", [r"^[a-z]+@corp\.com$"], {"plan": "Dana@corp.com"}, False),
        ("matches", ["a"], {"plan": "a" * (MAX_SUBJECT + 1)}, False),
    ],
)
def test_operators(op: str, values: list[Any], ctx: dict[str, Any], holds: bool) -> None:
    assert compile_condition("plan", op, values)(ctx) is holds


@pytest.mark.parametrize(
    ("op", "values", "words"),
    [
        ("like", ["x"], "unknown operator"),
        ("eq", [], "at least one value"),
        ("lt", [1, 2], "exactly one value"),
        ("lt", ["ten"], "is not one"),
        ("semver_gt", ["2.1"], "not a semantic version"),
        ("matches", ["(a+)+$"], "exponential"),
        ("matches", ["(x|y*)*"], "exponential"),
        ("matches", [r"(a)\1"], "back-reference"),
        ("matches", ["a" * 300], "more than 256"),
        ("matches", ["(unclosed"], "not a valid regular expression"),
    ],
)
def test_bad_conditions_are_refused_when_defined(op: str, values: list[Any], words: str) -> None:
    with pytest.raises(ConditionError) as caught:
        compile_condition("plan", op, values)
    assert words in caught.value.message
    assert caught.value.hint


def test_safe_patterns_compile() -> None:
    for pattern in (r"^user-\d+$", r"(ab)+c", r"[a-z]{2,5}@x\.io", r"(?:beta|canary)-\w+"):
        check_pattern(pattern)


def test_semver_precedence_follows_the_spec() -> None:
    ordered = [
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-alpha.beta",
        "1.0.0-beta",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
        "1.0.0-rc.1",
        "1.0.0",
        "1.0.1",
        "1.10.0",
        "2.0.0",
    ]
    keys = [semver_key(v) for v in ordered]
    assert all(k is not None for k in keys)
    assert keys == sorted(keys)  # type: ignore[type-var]
