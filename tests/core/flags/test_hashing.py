"""The sticky bucket: Unleash's vectors, its range, and stability as the percentage grows."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.core.flags.hashing import in_rollout, normalized_value


@pytest.mark.parametrize(
    ("value", "group", "bucket"),
    [
        # Unleash client-specification / unleash-client-java StrategyUtilsTest vectors.
        ("123", "gr1", 73),
        ("999", "groupX", 25),
    ],
)
def test_unleash_reference_vectors(value: str, group: str, bucket: int) -> None:
    assert normalized_value(value, group) == bucket


@given(st.text(max_size=50), st.text(max_size=50))
def test_bucket_is_1_to_100(value: str, group: str) -> None:
    assert 1 <= normalized_value(value, group) <= 100


@given(st.text(max_size=40), st.integers(0, 100), st.integers(0, 100))
def test_growing_the_percentage_only_adds_users(value: str, low: int, high: int) -> None:
    low, high = sorted((low, high))
    if in_rollout(value, "flag", low):
        assert in_rollout(value, "flag", high)


@given(st.text(max_size=40))
def test_zero_is_nobody_and_hundred_is_everybody(value: str) -> None:
    assert not in_rollout(value, "flag", 0)
    assert in_rollout(value, "flag", 100)


def test_buckets_are_roughly_uniform() -> None:
    inside = sum(in_rollout(f"user-{i}", "checkout", 25) for i in range(20_000))
    assert 4_600 < inside < 5_400


def test_the_flag_key_reshuffles_users() -> None:
    a = {i for i in range(2000) if in_rollout(str(i), "flag-a", 50)}
    b = {i for i in range(2000) if in_rollout(str(i), "flag-b", 50)}
    assert 0.35 < len(a & b) / len(a) < 0.65
