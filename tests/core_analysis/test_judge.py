"""The sequential judges: table tests, properties, and their error rates at a single look.

Whole canaries (many looks, the trigger and the analysis together) are simulated in
test_judge_sim.py; the numbers behind the decisions are checked against scipy in
test_stats.py.
"""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from conveyor.config.analysis import ERROR_RATE_DEFAULTS, LATENCY_DEFAULTS
from conveyor.core.judge import (
    INFORMATION_UNIT,
    MIN_EVENTS,
    TRIGGER_ALPHA,
    Verdict,
    compare_error_rate,
    compare_latency,
    information_look,
    judge_error_window,
    spent_alpha,
)
from conveyor.core.stats import probability_above

# -- alpha spending -------------------------------------------------------------------------


def test_spent_alpha_sums_to_alpha_over_any_number_of_looks() -> None:
    total = sum(spent_alpha(0.05, j) for j in range(1, 200_000))
    assert total == pytest.approx(0.05, rel=1e-4)
    assert spent_alpha(0.05, 1) == pytest.approx(0.05 * 6 / math.pi**2)
    assert spent_alpha(0.05, 0.3) == spent_alpha(0.05, 1)  # never looser than the first look


@pytest.mark.parametrize(
    ("trials", "look"), [(0, 1), (1, 1), (10, 1), (20, 2), (40, 3), (80, 4), (10 * 2**10, 11)]
)
def test_information_look_counts_doublings_of_traffic(trials: int, look: float) -> None:
    assert INFORMATION_UNIT == 10
    assert information_look(trials) == pytest.approx(look)


# -- the error-rate trigger -----------------------------------------------------------------

# id: (errors, requests, lifetime requests, min_requests) -> fails? At the default 5% limit.
WINDOWS: dict[str, tuple[int, int, int | None, int, bool]] = {
    "no-traffic": (0, 0, None, 1, False),
    "one-error-never": (1, 1, None, 1, False),
    "two-of-two": (2, 2, None, 1, True),
    "two-of-thirteen": (2, 13, None, 1, True),  # P(rate > 5%) = 0.9395 >= 0.9392
    "two-of-fourteen": (2, 14, None, 1, False),  # 0.929: two errors need a short window
    "two-of-twenty": (2, 20, None, 1, False),  # 10% observed, but not evidently over 5%
    "four-of-twenty": (4, 20, None, 1, True),
    "at-the-limit": (5, 100, None, 1, False),
    "just-over-in-many": (51, 1000, None, 1, False),
    "clearly-over-in-many": (80, 1000, None, 1, True),
    "floor-holds": (19, 19, None, 20, False),
    "floor-met": (20, 20, None, 20, True),
    # the 60th window's worth of a version's traffic is judged at 1 - 0.061/3600
    "old-version-same-evidence": (4, 20, 1200, 1, False),
    "old-version-outage": (12, 25, 1500, 1, True),
    "lifetime-below-window": (4, 20, 10, 1, True),  # counters restarted: first window again
}


@pytest.mark.parametrize(
    ("errors", "requests", "lifetime", "floor", "fails"), WINDOWS.values(), ids=WINDOWS
)
def test_trigger_table(
    errors: int, requests: int, lifetime: int | None, floor: int, fails: bool
) -> None:
    verdict = judge_error_window(
        errors, requests, limit=0.05, min_requests=floor, lifetime_requests=lifetime
    )
    assert verdict.outcome == ("fail" if fails else "inconclusive"), verdict.detail


def test_trigger_evidence() -> None:
    verdict = judge_error_window(4, 20, limit=0.05, lifetime_requests=80)
    assert verdict.outcome == "inconclusive"  # fourth window: 1 - 0.061/16 = 0.9962 needed
    assert verdict.evidence == {
        "requests": 20,
        "errors": 4,
        "error_rate": 0.2,
        "threshold": 0.05,
        "min_requests": 1,
        "look": 4.0,
        "fail_at": pytest.approx(1 - TRIGGER_ALPHA * 6 / math.pi**2 / 16, abs=1e-6),
        "probability_above": pytest.approx(0.99340, abs=1e-5),
        "test": "beta posterior P(rate > limit), Jeffreys prior, alpha spent per window",
    }
    assert verdict.detail == "P(rate > 5.0%) = 0.993, needed 0.996"


@settings(max_examples=150, deadline=None)
@given(
    errors=st.integers(0, 60),
    requests=st.integers(0, 400),
    more=st.integers(1, 20),
    lifetime=st.none() | st.integers(0, 100_000),
    limit=st.sampled_from([0.01, 0.05, 0.2]),
)
def test_trigger_more_errors_never_unfail(
    errors: int, requests: int, more: int, lifetime: int | None, limit: float
) -> None:
    errors = min(errors, requests)
    worse = min(errors + more, requests)

    def fails(k: int) -> bool:
        verdict = judge_error_window(k, requests, limit=limit, lifetime_requests=lifetime)
        return verdict.outcome == "fail"

    assert fails(worse) or not fails(errors)


@settings(max_examples=150, deadline=None)
@given(
    errors=st.integers(0, 60),
    requests=st.integers(1, 400),
    lifetime=st.integers(0, 100_000),
    older=st.integers(0, 100_000),
)
def test_trigger_a_longer_life_never_makes_failing_easier(
    errors: int, requests: int, lifetime: int, older: int
) -> None:
    errors = min(errors, requests)
    young = judge_error_window(errors, requests, limit=0.05, lifetime_requests=lifetime)
    old = judge_error_window(errors, requests, limit=0.05, lifetime_requests=lifetime + older)
    assert young.outcome == "fail" or old.outcome != "fail"


@settings(max_examples=150, deadline=None)
@given(requests=st.integers(0, 2000), lifetime=st.none() | st.integers(0, 10**6))
def test_trigger_never_fails_on_one_error_or_at_the_limit(
    requests: int, lifetime: int | None
) -> None:
    for errors in {min(1, requests), requests // 20}:  # one error; exactly 5%
        verdict = judge_error_window(errors, requests, limit=0.05, lifetime_requests=lifetime)
        assert verdict.outcome == "inconclusive"


@settings(max_examples=100, deadline=None)
@given(
    errors=st.integers(2, 200),
    requests=st.integers(2, 5000),
    limit=st.floats(0.0005, 0.9),
)
def test_trigger_quick_exit_agrees_with_the_posterior(
    errors: int, requests: int, limit: float
) -> None:
    """At or below the limit the trigger skips the posterior: it could not have failed."""
    assume(errors <= requests and errors / requests <= limit)
    assert probability_above(errors, requests, limit) < 1 - spent_alpha(TRIGGER_ALPHA, 1)


def test_trigger_huge_effects_need_few_requests() -> None:
    assert judge_error_window(2, 2, limit=0.05).outcome == "fail"  # an outage: two requests
    assert judge_error_window(3, 10, limit=0.05).outcome == "fail"  # 30% errors, ten requests
    assert MIN_EVENTS == 2


def test_trigger_rejects_impossible_counts() -> None:
    with pytest.raises(ValueError):
        judge_error_window(3, 2, limit=0.05)


# -- errors against stable ------------------------------------------------------------------

DEFAULT_DELTA = float(ERROR_RATE_DEFAULTS["max_delta"])


def errors(
    c_err: int, c_total: int, s_err: int, s_total: int, delta: float = DEFAULT_DELTA, **kw: float
) -> Verdict:
    settings_ = {"alpha": 0.05, "beta": 0.05, **kw}
    return compare_error_rate(
        c_err,
        c_total,
        s_err,
        s_total,
        max_delta=delta,
        alpha=settings_["alpha"],
        beta=settings_["beta"],
        min_requests=int(settings_.get("min_requests", 1)),
    )


# id: (canary errors, canary requests, stable errors, stable requests) -> outcome, at 1 point
ERRORS: dict[str, tuple[int, int, int, int, str]] = {
    "no-data": (0, 0, 0, 0, "inconclusive"),
    "no-stable-data": (0, 500, 0, 0, "inconclusive"),
    "the-issue-example": (0, 51, 0, 168, "inconclusive"),  # P(worse) = 0.258: honestly unsure
    "clean-canary-passes": (0, 200, 0, 660, "pass"),
    "healthy-canary-passes": (3, 800, 40, 8000, "pass"),  # both at 0.5%
    "one-error-is-not-enough": (1, 2, 0, 1000, "inconclusive"),
    "two-of-five-fails": (2, 5, 1, 200, "fail"),
    "twenty-percent-in-ten": (2, 10, 1, 230, "fail"),
    "ten-times-worse": (40, 400, 80, 8000, "fail"),
    "worse-but-within-delta": (20, 2000, 20, 4000, "pass"),  # 1% against 0.5%: +0.5 points
    "worse-by-delta-exactly": (30, 2000, 20, 4000, "inconclusive"),  # +1 point: P = 0.5
    "perfect-stable-one-error": (1, 200, 0, 10_000, "inconclusive"),
    "perfect-both": (0, 1000, 0, 10_000, "pass"),
}


@pytest.mark.parametrize(("c", "cn", "s", "sn", "outcome"), ERRORS.values(), ids=ERRORS)
def test_error_rate_table(c: int, cn: int, s: int, sn: int, outcome: str) -> None:
    verdict = errors(c, cn, s, sn)
    assert verdict.outcome == outcome, verdict.detail


def test_error_rate_floor_and_messages() -> None:
    verdict = errors(10, 10, 0, 10_000, min_requests=100)
    assert (verdict.outcome, verdict.detail) == (
        "inconclusive",
        "only 10 canary requests so far, 100 needed to judge",
    )
    assert errors(0, 0, 0, 0).detail == "only 0 canary requests so far, 1 needed to judge"
    assert errors(0, 0, 0, 0).evidence["canary_rate"] is None
    assert errors(1, 2, 0, 1000).detail.startswith("one failed request is not enough")


def test_error_rate_evidence_is_complete() -> None:
    verdict = errors(5, 200, 20, 4000, delta=0.005)
    assert verdict.outcome == "inconclusive"  # 0.967 at the 5th look: 0.9988 needed
    assert verdict.evidence == {
        "canary_errors": 5,
        "canary_requests": 200,
        "canary_rate": 0.025,
        "stable_errors": 20,
        "stable_requests": 4000,
        "stable_rate": 0.005,
        "max_delta": 0.005,
        "look": pytest.approx(1 + math.log2(20), abs=1e-3),
        "fail_at": pytest.approx(1 - spent_alpha(0.05, 1 + math.log2(20)), abs=1e-6),
        "pass_at": 0.05,
        "min_requests": 1,
        "test": "beta-binomial posterior, Jeffreys priors, alpha spent per look",
        "probability_worse": pytest.approx(0.9673, abs=2e-3),
    }
    assert "P(canary worse by > 0.5 points) = 0.967" in verdict.detail


def test_error_rate_rejects_impossible_counts() -> None:
    with pytest.raises(ValueError):
        errors(5, 4, 0, 10)


counts = st.tuples(st.integers(0, 40), st.integers(1, 600))


@settings(max_examples=120, deadline=None)
@given(canary=counts, stable=counts, more=st.integers(1, 10), delta=st.sampled_from([0, 0.01]))
def test_error_rate_more_errors_never_make_a_pass_more_likely(
    canary: tuple[int, int], stable: tuple[int, int], more: int, delta: float
) -> None:
    (c, cn), (s, sn) = canary, stable
    c, s = min(c, cn), min(s, sn)
    assume(c + more <= cn)
    before, after = errors(c, cn, s, sn, delta), errors(c + more, cn, s, sn, delta)
    rank = {"pass": 0, "inconclusive": 1, "fail": 2}
    assert rank[after.outcome] >= rank[before.outcome]


@settings(max_examples=120, deadline=None)
@given(canary=counts, stable=counts)
def test_error_rate_a_canary_no_worse_than_stable_never_fails(
    canary: tuple[int, int], stable: tuple[int, int]
) -> None:
    (c, cn), (s, sn) = canary, stable
    c, s = min(c, cn), min(s, sn)
    assume(c * sn <= s * cn)  # observed canary rate <= observed stable rate
    assert errors(c, cn, s, sn).outcome != "fail"


def test_error_rate_huge_effects_need_few_requests() -> None:
    assert errors(3, 3, 2, 400).outcome == "fail"  # every canary request failed
    assert errors(10, 10, 0, 10_000).outcome == "fail"


def test_error_rate_single_look_is_calibrated() -> None:
    """No margin, equal 2% rates, one look of a thousand requests: fails about alpha of the
    time at that look's level, not more (the Jeffreys posterior is close to calibrated)."""
    rng = random.Random(12)
    runs, failed = 400, 0
    for _ in range(runs):
        c = sum(rng.random() < 0.02 for _ in range(1000))
        s = sum(rng.random() < 0.02 for _ in range(4000))
        failed += errors(c, 1000, s, 4000, delta=0.0, alpha=0.5).outcome == "fail"
    level = spent_alpha(0.5, information_look(1000))  # 0.0055 at 1000 requests
    assert failed / runs <= level * 3 + 0.01


# -- latency against stable -----------------------------------------------------------------

MS = 0.001


def fresh(rng: random.Random, n: int, median: float = 2.3 * MS, sigma: float = 0.35) -> list[float]:
    return [rng.lognormvariate(math.log(median), sigma) for _ in range(n)]


def latency(canary: list[float], stable: list[float], **overrides: float) -> Verdict:
    s = {**LATENCY_DEFAULTS, **overrides}
    return compare_latency(
        canary,
        stable,
        quantile=float(s["quantile"]),
        max_ratio=float(s["max_ratio"]),
        min_delta=float(s["min_delta"]),
        alpha=float(s["alpha"]),
        beta=float(s["beta"]),
        min_samples=int(s["min_samples"]),
    )


def test_latency_a_300ms_regression_fails_on_ten_requests() -> None:
    rng = random.Random(1)
    stable = fresh(rng, 190, median=1.6 * MS, sigma=0.3)
    verdict = latency([v + 0.3 for v in fresh(rng, 10)], stable)
    assert verdict.outcome == "fail", verdict.detail
    assert verdict.evidence["over_threshold"] == 10
    assert float(verdict.evidence["p_value"] or 1) < 1e-12  # 0.05^10
    assert verdict.detail.startswith("canary is slower than tolerated: p95 3")


def test_latency_the_issue_false_rollback_now_passes() -> None:
    """p95 4.1 ms against 2.6 ms, ratio 1.6: over the ratio, far under +25 ms."""
    rng = random.Random(2)
    stable = fresh(rng, 2000, median=1.6 * MS, sigma=0.3)
    canary = fresh(rng, 100)
    verdict = latency(canary, stable, max_ratio=1.5)
    assert float(verdict.evidence["ratio"] or 0) > 1.5
    assert verdict.outcome == "pass", verdict.detail


def test_latency_too_few_samples_are_inconclusive() -> None:
    rng = random.Random(3)
    verdict = latency([v + 0.3 for v in fresh(rng, 9)], fresh(rng, 500))
    assert verdict.outcome == "inconclusive"
    assert verdict.detail == "only 9 canary samples so far, 10 needed to judge"
    assert latency([], []).outcome == "inconclusive"


def test_latency_tail_only_regression_is_inconclusive_not_pass() -> None:
    stable = [i / 1000 for i in range(1, 101)]
    canary = [*stable[:90], *(v * 3 for v in stable[90:])]  # same body, 3x slower top 10%
    verdict = latency(canary, stable)
    assert verdict.outcome == "inconclusive"
    assert verdict.detail.startswith("over tolerance, not yet significant")


def test_latency_within_tolerance_needs_samples_to_pass() -> None:
    rng = random.Random(4)
    stable = fresh(rng, 500, median=1.6 * MS)
    early = latency(fresh(rng, 20), stable)
    assert early.outcome == "inconclusive"
    assert early.detail.startswith("within tolerance so far, too few samples to pass")
    assert latency(fresh(rng, 60), stable).outcome == "pass"


def test_latency_ratio_applies_above_the_absolute_tolerance() -> None:
    """A 300 ms service 40% slower: 120 ms is over +25 ms and over 20%."""
    rng = random.Random(5)
    stable = fresh(rng, 1000, median=0.3, sigma=0.1)
    assert latency(fresh(rng, 40, median=0.42, sigma=0.1), stable).outcome == "fail"
    assert latency(fresh(rng, 200, median=0.31, sigma=0.1), stable).outcome == "pass"


samples = st.lists(st.floats(0.0005, 2.0), min_size=1, max_size=60)


@settings(max_examples=120, deadline=None)
@given(canary=samples, stable=samples, index=st.integers(0, 59), slower=st.floats(0, 1))
def test_latency_a_slower_request_never_makes_a_pass_more_likely(
    canary: list[float], stable: list[float], index: int, slower: float
) -> None:
    worse = list(canary)
    worse[index % len(worse)] += slower
    rank = {"pass": 0, "inconclusive": 1, "fail": 2}
    before, after = latency(canary, stable, min_samples=1), latency(worse, stable, min_samples=1)
    assert rank[after.outcome] >= rank[before.outcome]


@settings(max_examples=120, deadline=None)
@given(canary=samples, stable=samples, scale=st.floats(0.01, 100))
def test_latency_in_ratio_only_mode_units_do_not_matter(
    canary: list[float], stable: list[float], scale: float
) -> None:
    """With no absolute tolerance, seconds or minutes: the same verdict (symmetry of scale)."""
    first = latency(canary, stable, min_delta=0.0, min_samples=1)
    scaled = latency(
        [v * scale for v in canary], [v * scale for v in stable], min_delta=0.0, min_samples=1
    )
    assert first.outcome == scaled.outcome


@settings(max_examples=120, deadline=None)
@given(stable=samples, fractions=st.lists(st.floats(0, 1), min_size=1, max_size=60))
def test_latency_a_canary_within_tolerance_never_fails(
    stable: list[float], fractions: list[float]
) -> None:
    """Every canary request at most stable's p95 plus the tolerance: never a rollback."""
    ordered = sorted(stable)
    position = (len(ordered) - 1) * 0.95
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    p95 = ordered[low] + (ordered[high] - ordered[low]) * (position - low)
    limit = max(p95 * 1.2, p95 + 0.025)
    canary = [f * limit for f in fractions]
    assert latency(canary, stable, min_samples=1).outcome != "fail"


def test_latency_single_look_false_positive_rate() -> None:
    """Canary and stable from one distribution, one look: a failure is rarer than its level."""
    rng = random.Random(6)
    runs = 300
    failed = sum(
        latency(fresh(rng, 40), fresh(rng, 400), min_delta=0.0, alpha=0.5).outcome == "fail"
        for _ in range(runs)
    )
    assert failed / runs <= spent_alpha(0.5, information_look(40)) + 0.01
