"""A simulated canary judged by the real pure core: how fast, how often wrong.

One run is one release exposed as the issue measured it: a service taking ``rate`` requests
per second, a canary at 5% then 50% with pauses, then promoted and verified; the stable and
the canary versions each answer with an error rate and a latency distribution. Requests
arrive as a Poisson process, each is an error with its version's probability, and its
latency is drawn like a fresh process's: a lognormal body of a few milliseconds, occasional
outliers of tens of milliseconds, and a canary's first answers slow while it warms up.

The judges are the ones the product runs, fed the way the shell feeds them:

* the **error-rate trigger** (``core.rollout.error_rate_abort``) every controller tick
  (0.2 s, like ``conveyor server``), on ``core.traffic.window`` over snapshots of the
  canary's cumulative counters, as ``controller.driver`` takes them;
* a **background analysis** with ``compare_error_rate`` and ``compare_latency`` at the
  config defaults, measured every ``interval`` on everything since the run began, as the
  builtin provider does (latency samples: the newest ones, at most the router's 2048).
  The run began up to one interval before the canary's first request (it starts with the
  rollout; the canary serves once ready).

A run ends at the first failure (a rollback) or after its last step. Times are measured
from the canary's first answer, as users would. Used by tests/core_analysis/test_judge_sim.py
(a few hundred runs, fixed seed) and bench/judge_sim.py (10,000 and more).
"""

from __future__ import annotations

import bisect
import math
import random
from dataclasses import dataclass, field

from conveyor.config.analysis import ERROR_RATE_DEFAULTS, LATENCY_DEFAULTS
from conveyor.config.schema import RollbackConfig
from conveyor.core.judge import compare_error_rate, compare_latency
from conveyor.core.model import VersionCounters
from conveyor.core.rollout import error_rate_abort
from conveyor.core.state import Triggers
from conveyor.core.traffic import window

TICK = 0.2
INTERVAL = 5.0
RESERVOIR = 2048  # traffic.builtin.metrics.DEFAULT_SAMPLES
_ROLLBACK = RollbackConfig()
DEFAULT_TRIGGERS = Triggers(
    error_rate=_ROLLBACK.error_rate, min_requests=_ROLLBACK.min_requests, window=_ROLLBACK.window
)
"""The `rollback:` block's defaults, as the config schema declares them."""
STEPS = ((5, 30.0), (50, 30.0), (100, 15.0))
"""(canary weight %, seconds): 5% and 50% with 30 s pauses, then promoted and verified 15 s."""


@dataclass(frozen=True)
class Version:
    """How one version answers: its error rate and its latency distribution (seconds)."""

    error_rate: float = 0.005
    median: float = 0.0016
    sigma: float = 0.3  # lognormal shape: p95 = median * exp(1.645 sigma)
    outliers: float = 0.005  # share of requests delayed by a GC pause, a cold cache...
    outlier_delay: tuple[float, float] = (0.005, 0.040)
    cold: int = 0  # first requests answered slowly by a fresh process
    cold_delay: tuple[float, float] = (0.010, 0.030)
    extra: float = 0.0  # a latency fault: this much slower on every request

    def latency(self, rng: random.Random, index: int) -> float:
        value = rng.lognormvariate(math.log(self.median), self.sigma) + self.extra
        if rng.random() < self.outliers:
            value += rng.uniform(*self.outlier_delay)
        if index < self.cold:
            value += rng.uniform(*self.cold_delay)
        return value


STABLE = Version()
"""A warm stable version: 0.5% errors, p95 2.6 ms, 0.5% outliers up to 40 ms."""
HEALTHY = Version(median=0.0023, sigma=0.35, outliers=0.01, cold=2)
"""A healthy canary as fresh processes are: p95 4.1 ms against stable's 2.6 ms (the false
rollback the issue reports), twice the outliers, its first two answers 10-30 ms slow."""


def erroring(rate: float) -> Version:
    return Version(error_rate=rate, median=HEALTHY.median, sigma=HEALTHY.sigma, cold=2)


def slower(seconds: float) -> Version:
    return Version(median=HEALTHY.median, sigma=HEALTHY.sigma, cold=2, extra=seconds)


@dataclass
class Outcome:
    """What happened to one simulated canary."""

    failed_by: str | None = None  # "error-rate" (trigger), "errors" or "latency" (analysis)
    decided_after: float | None = None  # seconds from the canary's first answer to the rollback
    weight: int | None = None  # the canary's weight when it was rolled back
    detail: str = ""
    passed_after: dict[str, float] = field(default_factory=dict)  # first pass per comparison
    canary_requests: int = 0  # canary answers seen when decided (or in all)


@dataclass(frozen=True)
class Scenario:
    canary: Version = HEALTHY
    stable: Version = STABLE
    rate: float = 50.0
    steps: tuple[tuple[int, float], ...] = STEPS
    triggers: Triggers = DEFAULT_TRIGGERS
    interval: float = INTERVAL
    analysis: bool = True

    def run(self, rng: random.Random) -> Outcome:
        return _run(self, rng)


@dataclass
class _Answers:
    """One version's answers in completion order: times, latencies, cumulative errors."""

    done: list[float] = field(default_factory=list)
    latency: list[float] = field(default_factory=list)
    errors: list[int] = field(default_factory=list)  # errors among the first i + 1 answers

    def count(self, t: float) -> tuple[int, int]:
        """Answers and errors completed by time t."""
        n = bisect.bisect_right(self.done, t)
        return n, (self.errors[n - 1] if n else 0)


def _answers(requests: list[tuple[float, float, bool]]) -> _Answers:
    answers = _Answers()
    errors = 0
    for done, latency, error in sorted(requests):
        errors += error
        answers.done.append(done)
        answers.latency.append(latency)
        answers.errors.append(errors)
    return answers


def _traffic(s: Scenario, rng: random.Random) -> tuple[_Answers, _Answers, list[float]]:
    canary: list[tuple[float, float, bool]] = []
    stable: list[tuple[float, float, bool]] = []
    starts, t = [], 0.0
    for weight, seconds in s.steps:
        starts.append(t)
        end = t + seconds
        while True:
            t += rng.expovariate(s.rate)
            if t >= end:
                t = end
                break
            to_canary = rng.random() * 100 < weight
            version, answers = (s.canary, canary) if to_canary else (s.stable, stable)
            latency = version.latency(rng, len(answers))
            answers.append((t + latency, latency, rng.random() < version.error_rate))
    return _answers(canary), _answers(stable), starts


def _run(s: Scenario, rng: random.Random) -> Outcome:
    canary, stable, starts = _traffic(s, rng)
    end = sum(seconds for _, seconds in s.steps)
    outcome = Outcome()
    if not canary.done:
        return outcome
    first = canary.done[0]
    analysis_until = starts[-1] if s.steps[-1][0] == 100 else end
    next_look = first - rng.uniform(0, s.interval)  # the run began before the canary served
    next_look += s.interval * math.ceil((first - next_look) / s.interval)
    samples: list[tuple[float, VersionCounters]] = []
    now = 0.0
    while now <= end:
        n, k = canary.count(now)
        samples.append((now, VersionCounters(requests=n, responses_5xx=k)))
        start = bisect.bisect_right([t for t, _ in samples[-64:]], now - s.triggers.window)
        recent = samples[-64:][max(0, start - 1) :]
        traffic = window(recent, now, s.triggers.window)
        abort = error_rate_abort(s.triggers, traffic, now) if traffic is not None else None
        if abort is not None:
            return _decided(outcome, "error-rate", now - first, _weight(s, starts, now), n, abort)
        if s.analysis and now >= next_look and now < analysis_until:
            next_look += s.interval
            failed = _look(s, canary, stable, now, outcome, first)
            if failed is not None:
                by, detail = failed
                weight = _weight(s, starts, now)
                return _decided(outcome, by, now - first, weight, n, detail)
        now = round(now + TICK, 9)
    outcome.canary_requests = len(canary.done)
    return outcome


def _look(
    s: Scenario,
    canary: _Answers,
    stable: _Answers,
    now: float,
    outcome: Outcome,
    first: float,
) -> tuple[str, str] | None:
    (n_c, k_c), (n_s, k_s) = canary.count(now), stable.count(now)
    e = ERROR_RATE_DEFAULTS
    errors = compare_error_rate(
        k_c,
        n_c,
        k_s,
        n_s,
        max_delta=float(e["max_delta"]),
        alpha=float(e["alpha"]),
        beta=float(e["beta"]),
        min_requests=int(e["min_requests"]),
    )
    lat = LATENCY_DEFAULTS
    latency = compare_latency(
        canary.latency[max(0, n_c - RESERVOIR) : n_c],
        stable.latency[max(0, n_s - RESERVOIR) : n_s],
        quantile=float(lat["quantile"]),
        max_ratio=float(lat["max_ratio"]),
        min_delta=float(lat["min_delta"]),
        alpha=float(lat["alpha"]),
        beta=float(lat["beta"]),
        min_samples=int(lat["min_samples"]),
    )
    for name, verdict in (("errors", errors), ("latency", latency)):
        if verdict.outcome == "fail":
            return name, verdict.detail
        if verdict.outcome == "pass":
            outcome.passed_after.setdefault(name, now - first)
    return None


def _weight(s: Scenario, starts: list[float], now: float) -> int:
    return s.steps[max(0, bisect.bisect_right(starts, now) - 1)][0]


def _decided(
    outcome: Outcome, by: str, after: float, weight: int, requests: int, detail: object
) -> Outcome:
    outcome.failed_by, outcome.decided_after, outcome.weight = by, max(0.0, after), weight
    outcome.canary_requests = requests
    outcome.detail = getattr(detail, "message", str(detail))
    return outcome
