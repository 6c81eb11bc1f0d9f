"""Durations, percentages and instance counts as people write them in conveyor.yaml."""

from __future__ import annotations

import math

import pytest
from pydantic_core import PydanticCustomError

from conveyor.config.durations import (
    parse_duration,
    parse_int_or_percent,
    parse_percentage,
    resolve_int_or_percent,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("30s", 30.0),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("1m30s", 90.0),
        ("1h2m3s4ms", 3723.004),
        ("1.5s", 1.5),
        ("0s", 0.0),
        (" 10s ", 10.0),
        ("45", 45.0),
        (45, 45.0),
        (0.25, 0.25),
        (0, 0.0),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("abc", "expected a duration like 30s or 2m, got 'abc'"),
        ("10 minutes", "expected a duration like 30s or 2m"),
        ("30s1m", "expected a duration like 30s or 2m"),  # units largest first
        ("1m30", "expected a duration like 30s or 2m"),
        ("5d", "expected a duration like 30s or 2m"),
        ("", "expected a duration like 30s or 2m"),
        ("s", "expected a duration like 30s or 2m"),
        (True, "expected a duration like 30s or 2m, got true"),
        (None, "expected a duration like 30s or 2m, got nothing"),
        ([1], "expected a duration like 30s or 2m, got a list"),
        (math.inf, "expected a duration like 30s or 2m"),
        (math.nan, "expected a duration like 30s or 2m"),
        (10**400, "expected a duration like 30s or 2m"),
        ("9" * 400, "expected a duration like 30s or 2m"),
        ("-5s", "a duration cannot be negative, got '-5s'"),
        (-1, "a duration cannot be negative, got -1"),
    ],
)
def test_bad_durations(value: object, message: str) -> None:
    with pytest.raises(PydanticCustomError) as caught:
        parse_duration(value)
    assert message in caught.value.message()


def test_positive_durations_reject_zero() -> None:
    assert parse_duration("1ms", positive=True) == pytest.approx(0.001)
    with pytest.raises(PydanticCustomError, match="longer than 0"):
        parse_duration("0s", positive=True)


@pytest.mark.parametrize(
    ("value", "fraction"),
    [
        ("5%", 0.05),
        ("0%", 0.0),
        ("100%", 1.0),
        ("2.5%", 0.025),
        ("5 %", 0.05),
        (0.05, 0.05),
        (1, 1.0),
    ],
)
def test_percentages(value: object, fraction: float) -> None:
    assert parse_percentage(value) == pytest.approx(fraction)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (5, "expected a fraction between 0 and 1, got 5"),
        (-0.1, "expected a fraction between 0 and 1"),
        ("101%", "a percentage cannot exceed 100%"),
        ("-5%", "expected a percentage like 5%"),
        ("five", "expected a percentage like 5%, got 'five'"),
        ("0.05", "expected a percentage like 5%"),
        (True, "expected a percentage like 5%, got true"),
        (math.nan, "expected a fraction between 0 and 1"),
    ],
)
def test_bad_percentages(value: object, message: str) -> None:
    with pytest.raises(PydanticCustomError) as caught:
        parse_percentage(value)
    assert message in caught.value.message()


@pytest.mark.parametrize(
    ("value", "parsed"), [(0, 0), (3, 3), ("2", 2), ("25%", "25%"), (" 25 % ", "25%")]
)
def test_int_or_percent(value: object, parsed: int | str) -> None:
    assert parse_int_or_percent(value) == parsed


@pytest.mark.parametrize("value", [-1, "-1", "1.5", "150%", "12.5%", True, None, "x"])
def test_bad_int_or_percent(value: object) -> None:
    with pytest.raises(PydanticCustomError):
        parse_int_or_percent(value)


@pytest.mark.parametrize(
    ("value", "total", "round_up", "count"),
    [
        (2, 10, True, 2),
        ("25%", 4, True, 1),
        ("25%", 5, True, 2),  # 1.25 -> 2
        ("25%", 5, False, 1),  # 1.25 -> 1
        ("10%", 3, False, 0),
        ("10%", 3, True, 1),
        ("100%", 7, False, 7),
        ("0%", 7, True, 0),
    ],
)
def test_percent_resolution_rounds_like_kubernetes(
    value: int | str, total: int, round_up: bool, count: int
) -> None:
    assert resolve_int_or_percent(value, total, round_up=round_up) == count
