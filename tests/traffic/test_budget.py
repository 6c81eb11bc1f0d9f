"""``RetryBudget``: the router's share of retries, over a sliding window of its counters.

As in the router, every retry follows a canary attempt that is counted (``observe``).
"""

from __future__ import annotations

from conveyor.core.retry import RetryPolicy
from conveyor.traffic.builtin.budget import RetryBudget
from conveyor.traffic.builtin.metrics import VersionStats


def _serve(stats: VersionStats, count: int, status: int = 200) -> None:
    for _ in range(count):
        stats.observe(status, 0.001)


def _ask(budget: RetryBudget, canary: VersionStats, now: float, times: int) -> int:
    """``times`` failed canary attempts asking for a retry; how many were granted."""
    granted = 0
    for _ in range(times):
        if budget.spend(now):
            granted += 1
        _serve(canary, 1, 503)
    return granted


def test_the_minimum_holds_without_traffic_and_the_share_with_it() -> None:
    stats = {"v1": VersionStats("v1"), "v2": VersionStats("v2")}
    budget = RetryBudget(stats, RetryPolicy(budget=0.2, min_retries=3, window=10.0))
    assert _ask(budget, stats["v2"], 0.0, 5) == 3
    _serve(stats["v1"], 95)  # 100 user requests so far: 20% is 20 retries, 3 spent
    assert _ask(budget, stats["v2"], 1.0, 17) == 17 - 1  # the asking ones count too: 117
    assert budget.retries <= 0.2 * 117


def test_the_window_slides_and_old_retries_stop_counting() -> None:
    stats = {"v1": VersionStats("v1"), "v2": VersionStats("v2")}
    budget = RetryBudget(stats, RetryPolicy(budget=0.2, min_retries=0, window=10.0))
    for second in range(10):
        budget.tick(float(second))
        _serve(stats["v1"], 10)
    first = _ask(budget, stats["v2"], 9.5, 40)
    assert 20 <= first <= 28  # 20% of the 100 + 40 requests in the window
    assert _ask(budget, stats["v2"], 9.6, 10) <= 2  # spent: only 20% of these ten more
    for second in range(10, 25):  # time passes with traffic, no retries asked
        budget.tick(float(second))
        _serve(stats["v1"], 10)
    assert _ask(budget, stats["v2"], 25.0, 30) >= 20  # the old retries left the window
    assert len(budget.samples) <= 13  # pruned: one baseline plus ~ten samples per window


def test_a_budget_of_one_half_retries_half_the_user_requests() -> None:
    stats = {"v1": VersionStats("v1"), "v2": VersionStats("v2")}
    budget = RetryBudget(stats, RetryPolicy(budget=0.5, min_retries=0, window=10.0))
    _serve(stats["v1"], 10)
    granted = 0
    for _ in range(10):  # ten more users, each failed by the canary
        if budget.spend(1.0):
            granted += 1
            _serve(stats["v1"], 1)  # stable's answer to the retry
        _serve(stats["v2"], 1, 503)
    assert granted == 10  # 50% of the 20 user requests; retried attempts are not users
