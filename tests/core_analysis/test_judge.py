"""The comparative judge: numbers checked against scipy, decisions checked by simulation."""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import pytest

from conveyor.core.judge import (
    Verdict,
    beta_cdf,
    compare_error_rate,
    compare_latency,
    mann_whitney_u,
    probability_worse,
    quantile,
)

CANARY = [0.012, 0.015, 0.011, 0.030, 0.022, 0.019, 0.041, 0.017, 0.025, 0.013, 0.028, 0.033]
STABLE = [0.010, 0.012, 0.009, 0.014, 0.011, 0.016, 0.013, 0.010, 0.012, 0.015]

# -- numbers: reference values computed once with scipy 1.17 -------------------------------


@pytest.mark.parametrize(
    ("canary", "stable", "alternative", "u", "p"),
    [
        (CANARY, STABLE, "greater", 103.5, 0.0022432504003303006),
        (CANARY, STABLE, "less", 103.5, 0.9981803811890008),
        (CANARY, STABLE, "two-sided", 103.5, 0.004486500800660601),
        (
            [1, 2, 2, 3, 3, 3, 4, 5, 5, 9],
            [1, 1, 2, 2, 2, 3, 4, 4],
            "greater",
            55.5,
            0.08684481419548856,
        ),
        (
            [1, 2, 2, 3, 3, 3, 4, 5, 5, 9],
            [1, 1, 2, 2, 2, 3, 4, 4],
            "two-sided",
            55.5,
            0.17368962839097712,
        ),
        ([3.1, 4.7, 5.2], [1.0, 2.2, 2.9, 3.5, 4.0], "greater", 13.0, 1 / 14),  # exact
        ([3.1, 4.7, 5.2], [1.0, 2.2, 2.9, 3.5, 4.0], "less", 13.0, 27 / 28),
        ([3.1, 4.7, 5.2], [1.0, 2.2, 2.9, 3.5, 4.0], "two-sided", 13.0, 1 / 7),
    ],
)
def test_mann_whitney_reference_values(
    canary: list[float], stable: list[float], alternative: str, u: float, p: float
) -> None:
    result = mann_whitney_u(canary, stable, alternative=alternative)  # type: ignore[arg-type]
    assert result.u == u
    assert result.p_value == pytest.approx(p, rel=1e-9)
    assert result.effect == pytest.approx(u / (len(canary) * len(stable)))


def test_mann_whitney_degenerate_samples() -> None:
    assert mann_whitney_u([1.0] * 20, [1.0] * 20).p_value == 1.0  # all tied: no evidence
    assert mann_whitney_u([2.0], [1.0]).p_value == 0.5  # exact, one pair
    with pytest.raises(ValueError, match="at least one value"):
        mann_whitney_u([], [1.0])


@pytest.mark.parametrize(
    ("x", "a", "b", "expected"),
    [
        (0.02, 3.5, 97.5, 0.21904365210808363),
        (0.001, 0.5, 1000.5, 0.842856476634481),
        (0.05, 500.5, 9500.5, 0.49725363434923353),
        (0.0, 2.0, 3.0, 0.0),
        (1.0, 2.0, 3.0, 1.0),
    ],
)
def test_beta_cdf_reference_values(x: float, a: float, b: float, expected: float) -> None:
    assert beta_cdf(x, a, b) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        ((5, 200, 20, 4000, 0.005), 0.9673324327748063),
        ((1, 100, 0, 5000, 0.005), 0.7964039498791305),
        ((3, 1000, 40, 20000, 0.001), 0.5357982587496325),
        ((100, 1000, 2, 50, 0.01), 0.8972609789396849),
        ((12, 400, 40, 4000, 0.0), 0.9989475300902946),
        ((0, 100, 0, 100, 0.0), 0.5),  # symmetric, and both densities singular at zero
    ],
)
def test_probability_worse_reference_values(
    counts: tuple[int, int, int, int, float], expected: float
) -> None:
    assert probability_worse(*counts) == pytest.approx(expected, abs=2e-3)


def test_quantile_interpolates_like_numpy() -> None:
    values = [0.5, 0.1, 0.9, 0.3, 0.7]
    got = [quantile(values, q) for q in (0, 0.25, 0.5, 0.95, 1)]
    assert got == pytest.approx([0.1, 0.3, 0.5, 0.86, 0.9])
    with pytest.raises(ValueError):
        quantile([], 0.5)


def test_against_scipy_on_random_samples() -> None:
    stats = pytest.importorskip("scipy.stats", reason="pip install scipy to cross-check")
    rng = random.Random(7)
    for _ in range(120):
        ties = rng.random() < 0.5
        draw: Callable[[], float] = (lambda: float(rng.randint(0, 6))) if ties else rng.random
        x = [draw() for _ in range(rng.randint(1, 40))]
        y = [draw() for _ in range(rng.randint(1, 40))]
        for alternative in ("greater", "less", "two-sided"):
            ours = mann_whitney_u(x, y, alternative=alternative)
            ref = stats.mannwhitneyu(x, y, alternative=alternative)
            if math.isnan(ref.pvalue):
                continue
            assert ours.u == ref.statistic
            assert ours.p_value == pytest.approx(ref.pvalue, abs=1e-12)
    for _ in range(200):
        a, b = rng.choice([0.5, 1.5, 20.5, 1e4]), rng.choice([0.5, 3.5, 900.5, 1e6])
        point = rng.random() ** 3
        assert beta_cdf(point, a, b) == pytest.approx(stats.beta(a, b).cdf(point), abs=1e-8)


# -- latency decisions ----------------------------------------------------------------------


def lognormal(rng: random.Random, n: int, factor: float = 1.0) -> list[float]:
    return [rng.lognormvariate(-3.0, 0.5) * factor for _ in range(n)]


def latency(canary: list[float], stable: list[float], min_samples: int = 50) -> Verdict:
    return compare_latency(
        canary, stable, max_ratio=1.2, quantile=0.95, alpha=0.05, min_samples=min_samples
    )


def test_latency_tiny_samples_are_inconclusive() -> None:
    rng = random.Random(1)
    verdict = latency(lognormal(rng, 10, factor=5.0), lognormal(rng, 500))
    assert verdict.outcome == "inconclusive"
    assert verdict.detail == "only 10 canary samples so far, 50 needed to judge"
    assert verdict.evidence["canary_samples"] == 10
    assert latency(lognormal(rng, 500), lognormal(rng, 3)).outcome == "inconclusive"


def test_latency_a_slower_canary_fails() -> None:
    rng = random.Random(2)
    verdict = latency(lognormal(rng, 200, factor=1.5), lognormal(rng, 2000))
    assert verdict.outcome == "fail"
    evidence = verdict.evidence
    assert evidence["ratio"] is not None and float(evidence["ratio"]) > 1.2
    assert float(evidence["p_value"]) < 0.05  # type: ignore[arg-type]
    for key in ("canary_samples", "stable_samples", "u", "effect", "alpha", "max_ratio"):
        assert key in evidence


def test_latency_slower_within_budget_passes() -> None:
    rng = random.Random(3)
    verdict = latency(lognormal(rng, 2000, factor=1.1), lognormal(rng, 2000))
    assert float(verdict.evidence["p_value"]) < 0.05  # type: ignore[arg-type]
    assert verdict.outcome == "pass"  # significant, but 10% is inside the 20% budget


def test_latency_tail_only_regression_is_inconclusive_not_pass() -> None:
    stable = [i / 1000 for i in range(1, 101)]
    canary = [*stable[:90], *(v * 3 for v in stable[90:])]  # same body, 3x slower top 10%
    verdict = latency(canary, stable)
    assert float(verdict.evidence["p_value"]) > 0.05  # type: ignore[arg-type]
    assert verdict.outcome == "inconclusive"
    assert verdict.detail.startswith("over budget but not significant")


def test_latency_false_positive_rate_is_below_alpha() -> None:
    """Identical distributions, judged at 6 growing looks per run: how many runs fail?"""
    runs, failed = 120, 0
    for seed in range(runs):
        rng = random.Random(seed)
        canary: list[float] = []
        stable: list[float] = []
        for _ in range(6):
            canary += lognormal(rng, 60)
            stable += lognormal(rng, 600)
            if latency(canary, stable[-2048:]).outcome == "fail":
                failed += 1
                break
    assert failed / runs <= 0.03  # measured 0.02 at alpha 0.05 with 200 runs


# -- error-rate decisions -------------------------------------------------------------------


def errors(c_err: int, c_total: int, s_err: int, s_total: int, delta: float = 0.005) -> Verdict:
    return compare_error_rate(
        c_err, c_total, s_err, s_total, max_delta=delta, alpha=0.05, beta=0.05, min_requests=100
    )


def binomial(rng: random.Random, n: int, p: float) -> int:
    return sum(rng.random() < p for _ in range(n))


def test_error_rate_tiny_samples_are_inconclusive() -> None:
    verdict = errors(10, 10, 0, 10_000)  # every canary request failed, but only ten of them
    assert verdict.outcome == "inconclusive"
    assert verdict.detail == "only 10 canary requests so far, 100 needed to judge"
    assert errors(0, 5000, 0, 20).outcome == "inconclusive"  # too little stable traffic
    assert errors(0, 0, 0, 0).evidence["canary_rate"] is None


def test_error_rate_ten_times_worse_fails() -> None:
    rng = random.Random(4)
    verdict = errors(binomial(rng, 400, 0.10), 400, binomial(rng, 8000, 0.01), 8000)
    assert verdict.outcome == "fail"
    assert float(verdict.evidence["probability_worse"]) >= 0.95  # type: ignore[arg-type]


def test_error_rate_same_rate_with_plenty_of_traffic_passes() -> None:
    rng = random.Random(5)
    verdict = errors(binomial(rng, 5000, 0.01), 5000, binomial(rng, 50_000, 0.01), 50_000)
    assert verdict.outcome == "pass"


def test_error_rate_perfect_stable_does_not_make_one_error_fatal() -> None:
    # Where an SPRT with a zero stable rate would fail on the first canary error:
    assert errors(1, 200, 0, 10_000).outcome == "inconclusive"
    assert errors(0, 1000, 0, 10_000).outcome == "pass"


def test_error_rate_evidence_is_complete() -> None:
    verdict = errors(5, 200, 20, 4000)
    assert verdict.outcome == "fail"
    assert verdict.evidence == {
        "canary_errors": 5,
        "canary_requests": 200,
        "canary_rate": 0.025,
        "stable_errors": 20,
        "stable_requests": 4000,
        "stable_rate": 0.005,
        "max_delta": 0.005,
        "fail_at": 0.95,
        "pass_at": 0.05,
        "min_requests": 100,
        "test": "beta-binomial posterior, Jeffreys priors",
        "probability_worse": pytest.approx(0.9673, abs=2e-3),
    }
    assert "P(canary worse by > 0.5 points) = 0.967" in verdict.detail


def test_error_rate_rejects_impossible_counts() -> None:
    with pytest.raises(ValueError):
        errors(5, 4, 0, 10)


def test_error_rate_false_positive_rate_is_below_alpha() -> None:
    """Equal 1% rates, 8 cumulative looks per run (canary at 10% of the traffic)."""
    runs, failed = 150, 0
    for seed in range(runs):
        rng = random.Random(seed)
        c_err = c_total = s_err = s_total = 0
        for _ in range(8):
            c_err, c_total = c_err + binomial(rng, 200, 0.01), c_total + 200
            s_err, s_total = s_err + binomial(rng, 2000, 0.01), s_total + 2000
            if errors(c_err, c_total, s_err, s_total).outcome == "fail":
                failed += 1
                break
    assert failed / runs <= 0.04  # measured 0.03 with 200 runs at alpha 0.05


def test_error_rate_single_look_is_calibrated() -> None:
    """With no margin and one look, equal rates fail about alpha of the time, not more."""
    runs = 300
    failed = 0
    for seed in range(runs):
        rng = random.Random(10_000 + seed)
        c, s = binomial(rng, 1000, 0.02), binomial(rng, 4000, 0.02)
        failed += errors(c, 1000, s, 4000, delta=0.0).outcome == "fail"
    assert failed / runs <= 0.05 * 1.5
