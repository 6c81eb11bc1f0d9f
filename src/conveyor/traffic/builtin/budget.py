"""``RetryBudget``: one route's retry budget, kept from its counters (``core.retry``).

The router counts every request anyway (``VersionStats``), so the budget needs no work per
request: it samples the route's cumulative totals (user requests, budgeted retries) at most
ten times per window, from the sweeper and whenever a retry is asked for, and
``core.retry.window_counts`` turns the samples into the window's figures. Only a failing
canary's request ever asks, so the cost lands on failures, not on the hot path.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping

from conveyor.core.retry import RetryPolicy, Sample, budget_allows, prune, window_counts
from conveyor.traffic.builtin.metrics import VersionStats


class RetryBudget:
    """Retries already spent, and samples of the totals to measure a sliding window with."""

    __slots__ = ("policy", "retries", "samples", "stats")

    def __init__(self, stats: Mapping[str, VersionStats], policy: RetryPolicy) -> None:
        self.stats = stats  # the route's live per-version counters (grows with new versions)
        self.policy = policy  # replaced by each apply()
        self.retries = 0  # budgeted retries since the router started
        self.samples: deque[Sample] = deque()

    def _now(self, now: float) -> Sample:
        # user requests: every attempt counted, minus the retries that added attempts
        requests = sum(s.requests for s in self.stats.values())
        return now, requests - self.retries, self.retries

    def tick(self, now: float) -> None:
        """Sample the totals if the newest sample is older than a tenth of the window."""
        samples = self.samples
        window = self.policy.window
        if samples and now - samples[-1][0] < window / 10:
            return
        samples.append(self._now(now))
        for _ in range(prune(samples, now, window)):
            samples.popleft()

    def spend(self, now: float) -> bool:
        """Take one retry from the budget if it has one left (``core.retry.budget_allows``)."""
        self.tick(now)
        requests, retries = window_counts(self.samples, self._now(now), self.policy.window)
        # the request asking has not ended, so it is not counted yet: it is one of them
        if not budget_allows(self.policy, requests + 1, retries):
            return False
        self.retries += 1
        return True
