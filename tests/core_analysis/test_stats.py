"""The judge's numbers against scipy: rank test, beta posteriors, binomial tails, quantiles."""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conveyor.core.stats import (
    beta_cdf,
    binomial_tail,
    mann_whitney_u,
    probability_above,
    probability_worse,
    quantile,
    quantile_upper_bound,
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


# -- the judge's questions ------------------------------------------------------------------

stats = pytest.importorskip("scipy.stats", reason="pip install scipy to cross-check")


@pytest.mark.parametrize(
    ("events", "trials", "rate"),
    [
        (0, 0, 0.05),
        (0, 10, 0.05),
        (1, 1, 0.05),
        (2, 12, 0.05),
        (2, 13, 0.05),
        (51, 1000, 0.05),
        (0, 59, 0.05),
        (3, 10, 0.05),
        (10, 10, 0.05),
        (40, 2000, 0.01),
    ],
)
def test_probability_above_is_the_jeffreys_posterior_tail(
    events: int, trials: int, rate: float
) -> None:
    expected = stats.beta(events + 0.5, trials - events + 0.5).sf(rate)
    assert probability_above(events, trials, rate) == pytest.approx(expected, abs=1e-10)


def test_probability_above_rejects_impossible_counts() -> None:
    with pytest.raises(ValueError):
        probability_above(3, 2, 0.05)


@pytest.mark.parametrize(
    ("k", "n", "p"),
    [
        (0, 5, 0.1),
        (1, 1, 0.05),
        (2, 12, 0.05),
        (3, 10, 0.05),
        (6, 5, 0.5),
        (30, 1000, 0.02),
        (100, 100, 0.99),
    ],
)
def test_binomial_tail_is_exact(k: int, n: int, p: float) -> None:
    assert binomial_tail(k, n, p) == pytest.approx(stats.binom(n, p).sf(k - 1), abs=1e-12)


@pytest.mark.parametrize("n", [1, 5, 58, 59, 60, 200, 2048])
@pytest.mark.parametrize(("q", "confidence"), [(0.95, 0.95), (0.5, 0.99), (0.99, 0.9)])
def test_quantile_upper_bound_is_the_smallest_order_statistic_with_that_confidence(
    n: int, q: float, confidence: float
) -> None:
    samples = [float(i) for i in range(1, n + 1)]  # the j-th smallest is j
    bound = quantile_upper_bound(list(reversed(samples)), q, confidence)
    coverage = stats.binom(n, q).cdf(bound - 1)  # P(X_(j) >= the true quantile)
    cdf = stats.binom.cdf(range(n), n, q)  # cdf[j - 1] = P(Bin(n, q) <= j - 1)
    fits = [j for j in range(1, n + 1) if cdf[j - 1] >= confidence]
    assert bound == (fits[0] if fits else n)
    assert coverage >= confidence or bound == n


def test_quantile_upper_bound_covers_the_true_quantile() -> None:
    """Distribution-free: lognormal latencies, the bound is below the truth <= 5% of the time."""
    rng = random.Random(11)
    true_p95 = math.exp(-3.0 + 0.5 * 1.6448536269514722)
    misses = sum(
        quantile_upper_bound([rng.lognormvariate(-3.0, 0.5) for _ in range(100)], 0.95, 0.95)
        < true_p95
        for _ in range(400)
    )
    assert misses / 400 <= 0.05 + 0.02  # measured 0.03 (order statistics are conservative)


@settings(max_examples=60, deadline=None)
@given(
    c=st.integers(0, 60),
    cn=st.integers(1, 400),
    s=st.integers(0, 60),
    sn=st.integers(1, 4000),
    delta=st.floats(-0.05, 0.05),
)
def test_probability_worse_is_symmetric(c: int, cn: int, s: int, sn: int, delta: float) -> None:
    """P(canary > stable + d) + P(stable > canary - d) = 1: swapping the versions mirrors it."""
    c, s = min(c, cn), min(s, sn)
    total = probability_worse(c, cn, s, sn, delta) + probability_worse(s, sn, c, cn, -delta)
    assert total == pytest.approx(1.0, abs=4e-3)


def test_probability_worse_against_scipy_integration() -> None:
    integrate = pytest.importorskip("scipy.integrate")
    for c, cn, s, sn, d in [
        (2, 12, 1, 230, 0.01),
        (0, 51, 0, 168, 0.01),
        (7, 300, 30, 6000, 0.005),
    ]:
        canary, stable = stats.beta(c + 0.5, cn - c + 0.5), stats.beta(s + 0.5, sn - s + 0.5)
        expected, _ = integrate.quad(
            lambda y, c_=canary, s_=stable, d_=d: s_.pdf(y) * c_.sf(y + d_),
            0,
            1,
            points=[s / sn],
            limit=200,
        )
        assert probability_worse(c, cn, s, sn, d) == pytest.approx(expected, abs=2e-3)
