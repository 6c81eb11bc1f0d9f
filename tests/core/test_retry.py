"""``core.retry``: which canary failures stable answers, and the budget that bounds them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.core.retry import (
    RetryKind,
    RetryPolicy,
    budget_allows,
    prune,
    retry_kind,
    window_counts,
)

POLICY = RetryPolicy()


@pytest.mark.parametrize(
    ("method", "sent", "buffered", "status", "kind"),
    [
        # a 5xx answer to an idempotent, buffered request: retried, and it costs budget
        ("GET", True, True, 500, RetryKind.BUDGETED),
        ("GET", True, True, 503, RetryKind.BUDGETED),
        ("HEAD", True, True, 599, RetryKind.BUDGETED),
        ("OPTIONS", True, True, 502, RetryKind.BUDGETED),
        # the canary dropped the connection before a response byte
        ("GET", True, True, None, RetryKind.BUDGETED),
        # any other answer is the canary's answer
        ("GET", True, True, 200, RetryKind.ANSWER),
        ("GET", True, True, 404, RetryKind.ANSWER),
        ("GET", True, True, 499, RetryKind.ANSWER),
        # never a non-idempotent request that was sent
        ("POST", True, True, 503, RetryKind.ANSWER),
        ("POST", True, True, None, RetryKind.ANSWER),
        ("PUT", True, True, 503, RetryKind.ANSWER),  # not in the default list
        # a body that was streamed cannot be written again
        ("GET", True, False, 503, RetryKind.ANSWER),
        # nothing reached the canary: any method may go to stable, free of budget
        ("POST", False, True, None, RetryKind.FREE),
        ("GET", False, False, None, RetryKind.FREE),
    ],
)
def test_retry_kind_table(
    method: str, sent: bool, buffered: bool, status: int | None, kind: RetryKind
) -> None:
    found = retry_kind(POLICY, method=method, sent=sent, body_buffered=buffered, status=status)
    assert found is kind


def test_methods_are_configurable_and_empty_turns_retries_of_sent_requests_off() -> None:
    puts = RetryPolicy(methods=("GET", "PUT"))
    assert retry_kind(puts, method="PUT", sent=True, body_buffered=True, status=503) is (
        RetryKind.BUDGETED
    )
    assert retry_kind(puts, method="HEAD", sent=True, body_buffered=True, status=503) is (
        RetryKind.ANSWER
    )
    off = RetryPolicy(methods=())
    assert not off.enabled
    assert retry_kind(off, method="GET", sent=True, body_buffered=True, status=503) is (
        RetryKind.ANSWER
    )


@given(
    method=st.sampled_from(["GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"]),
    sent=st.booleans(),
    buffered=st.booleans(),
    status=st.none() | st.integers(100, 599),
)
def test_never_retries_what_may_act_twice(
    method: str, sent: bool, buffered: bool, status: int | None
) -> None:
    kind = retry_kind(POLICY, method=method, sent=sent, body_buffered=buffered, status=status)
    if sent and (method not in POLICY.methods or not buffered):
        assert kind is RetryKind.ANSWER
    if status is not None and status < 500:
        assert kind is RetryKind.ANSWER
    if kind is RetryKind.FREE:
        assert not sent


@pytest.mark.parametrize(
    ("requests", "retries", "allowed"),
    [
        (0, 0, True),  # the minimum holds with no traffic at all
        (0, 2, True),
        (0, 3, False),
        (100, 19, True),
        (100, 20, False),  # 20% of 100
        (1000, 199, True),
        (1000, 200, False),
        (10, 3, False),  # 20% of 10 is below the minimum of 3
    ],
)
def test_budget_table(requests: int, retries: int, allowed: bool) -> None:
    assert budget_allows(POLICY, requests, retries) is allowed


@given(
    budget=st.floats(0.0, 1.0),
    min_retries=st.integers(0, 20),
    arrivals=st.lists(st.booleans(), max_size=400),
)
def test_spending_the_budget_never_exceeds_its_share(
    budget: float, min_retries: int, arrivals: list[bool]
) -> None:
    """Every request wants a retry: the retries granted stay within the promise."""
    policy = RetryPolicy(budget=budget, min_retries=min_retries)
    requests = retries = 0
    for wants in arrivals:
        requests += 1
        if wants and budget_allows(policy, requests, retries):
            retries += 1
    assert retries <= max(min_retries, budget * requests) + 1e-9


def test_window_counts_use_the_newest_sample_before_the_window() -> None:
    samples = [(0.0, 0, 0), (5.0, 50, 5), (10.0, 100, 9), (15.0, 150, 12)]
    assert window_counts(samples, (20.0, 200, 20), 10.0) == (100, 11)  # baseline at 10 s
    assert window_counts(samples, (12.0, 120, 10), 10.0) == (120, 10)  # not that much history
    assert window_counts([], (3.0, 30, 1), 10.0) == (30, 1)  # from the start: totals from 0
    assert window_counts(samples[2:], (12.0, 120, 10), 10.0) == (120, 10)
    assert window_counts(samples, (20.0, 90, 0), 10.0) == (0, 0)  # never negative


@given(st.lists(st.floats(0, 100), min_size=1, max_size=30), st.floats(0, 200))
def test_pruning_keeps_the_window_baseline(times: list[float], now: float) -> None:
    samples = [(t, i, 0) for i, t in enumerate(sorted(times))]
    drop = prune(samples, now, 10.0)
    tail = (now, 10**6, 0)
    assert window_counts(samples[drop:], tail, 10.0) == window_counts(samples, tail, 10.0)
    assert drop < len(samples)


def test_policy_json_round_trip() -> None:
    policy = RetryPolicy(methods=("GET",), budget=0.1, min_retries=5, window=30.0)
    assert RetryPolicy.from_json(policy.to_json()) == policy
    assert RetryPolicy.from_json({}) == RetryPolicy()
