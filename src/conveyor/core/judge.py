"""Comparative judgement: is the canary worse than the stable version it would replace?

Thresholds on one version ("error rate under 1%") fail every canary on a bad day and pass
every canary on a quiet one. Comparing against the stable version serving the same traffic at
the same time cancels out the day. Two questions are asked, each with a test suited to it:

**Latency** — samples are skewed and heavy-tailed, so the test is the Mann-Whitney U rank test
(as in Kayenta's NetflixACAJudge), one-sided: *is the canary stochastically slower?* A
significant but harmless shift is common with big samples, so a canary fails only when it is
both significantly slower **and** its chosen quantile exceeds the stable one by more than
``max_ratio``. Over the budget but not significant is *inconclusive* (perhaps a tail-only
regression, perhaps noise), never a pass.

**Error rate** — errors are rare binomial events watched while they accumulate, and the point
is to decide as soon as the evidence allows. The test is a Bayesian beta-binomial comparison:
with Jeffreys priors Beta(1/2, 1/2) on both rates, it computes the posterior probability
``P(canary_rate > stable_rate + max_delta)``. That probability above ``1 - alpha`` fails the
canary, below ``beta`` passes it, in between is honestly inconclusive. Chosen over Wald's
SPRT because it carries the uncertainty of *both* rates (the stable rate is estimated too,
from little traffic at night) and does not explode when the stable version has no errors at
all, where the SPRT's log-likelihood ratio puts infinite weight on the canary's first error.
Below ``min_requests`` on either side the answer is inconclusive whatever the counts: with a
handful of requests the prior, not the data, would decide.

Everything is pure Python (``math`` only); scipy is used by the tests to check the numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

Outcome = Literal["pass", "fail", "inconclusive"]
Alternative = Literal["greater", "less", "two-sided"]
EXACT_LIMIT = 8
"""Exact U distribution when the smaller sample has at most this many values and no ties."""


@dataclass(frozen=True)
class Verdict:
    """The judge's answer, one sentence of why, and the numbers behind it for the ledger."""

    outcome: Outcome
    detail: str
    evidence: Mapping[str, float | int | str | None] = field(default_factory=dict)


class MannWhitney(NamedTuple):
    u: float  # U of the canary sample: pairs where the canary is larger, ties counting 1/2
    p_value: float
    effect: float  # U / (n1 * n2): P(canary > stable) + P(tie) / 2; 0.5 means no difference


# -- Mann-Whitney U -------------------------------------------------------------------------


def mann_whitney_u(
    canary: Sequence[float],
    stable: Sequence[float],
    *,
    alternative: Alternative = "greater",
    exact: bool | None = None,
) -> MannWhitney:
    """Mann-Whitney U test of ``canary`` against ``stable``; "greater" asks "is it slower?".

    The p-value is exact for small samples without ties (``exact=None`` chooses like scipy:
    exact when either sample has at most ``EXACT_LIMIT`` values and nothing ties), otherwise
    the normal approximation with tie and continuity corrections.
    """
    n1, n2 = len(canary), len(stable)
    if n1 == 0 or n2 == 0:
        raise ValueError("mann_whitney_u needs at least one value in each sample")
    ranks, tie_sizes = _ranks([*canary, *stable])
    u1 = sum(ranks[:n1]) - n1 * (n1 + 1) / 2
    u2 = n1 * n2 - u1
    if exact is None:
        exact = min(n1, n2) <= EXACT_LIMIT and not tie_sizes
    if exact:
        p = _exact_p(u1, u2, n1, n2, alternative)
    else:
        p = _normal_p(u1, u2, n1, n2, tie_sizes, alternative)
    return MannWhitney(u1, min(1.0, max(0.0, p)), u1 / (n1 * n2))


def _ranks(values: Sequence[float]) -> tuple[list[float], list[int]]:
    """Ranks from 1, ties sharing their average rank; also the size of every tie group."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    ties: list[int] = []
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for position in range(start, end + 1):
            ranks[order[position]] = (start + end) / 2 + 1
        if end > start:
            ties.append(end - start + 1)
        start = end + 1
    return ranks, ties


def _normal_p(
    u1: float, u2: float, n1: int, n2: int, ties: Sequence[int], alternative: Alternative
) -> float:
    n = n1 + n2
    tie_term = sum(t**3 - t for t in ties) / (n * (n - 1)) if n > 1 else 0.0
    sigma = math.sqrt(n1 * n2 / 12 * ((n + 1) - tie_term))
    if sigma == 0:
        return 1.0  # every value is the same: no evidence of any difference
    u = {"greater": u1, "less": u2}.get(alternative, max(u1, u2))
    upper_tail = normal_sf((u - n1 * n2 / 2 - 0.5) / sigma)
    return 2 * upper_tail if alternative == "two-sided" else upper_tail


def _exact_p(u1: float, u2: float, n1: int, n2: int, alternative: Alternative) -> float:
    """Tail of the exact null distribution of U (Gaussian binomial coefficients)."""
    small, large = min(n1, n2), max(n1, n2)
    counts = [1]
    for i in range(1, small + 1):  # multiply by (1 - q^(large+i)) / (1 - q^i)
        grown = counts + [0] * (large + i)
        for k in range(len(grown) - 1, large + i - 1, -1):
            grown[k] -= grown[k - large - i]
        for k in range(i, len(grown)):
            grown[k] += grown[k - i]
        counts = grown[: small * large + 1]
    total = math.comb(n1 + n2, n1)
    u = {"greater": u1, "less": u2}.get(alternative, max(u1, u2))
    tail = sum(counts[math.ceil(u) :]) / total
    return 2 * tail if alternative == "two-sided" else tail


def normal_sf(z: float) -> float:
    """P(Z > z) for a standard normal."""
    return 0.5 * math.erfc(z / math.sqrt(2))


def quantile(samples: Sequence[float], q: float) -> float:
    """The q-quantile by linear interpolation between order statistics (numpy's default)."""
    if not samples:
        raise ValueError("quantile of no samples")
    ordered = sorted(samples)
    position = (len(ordered) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


_quantile = quantile  # compare_latency's ``quantile`` parameter shadows the function


# -- latency --------------------------------------------------------------------------------


def compare_latency(
    canary_samples: Sequence[float],
    stable_samples: Sequence[float],
    *,
    max_ratio: float,
    quantile: float,
    alpha: float,
    min_samples: int,
) -> Verdict:
    """Fail only a canary that is significantly slower *and* over the quantile ratio budget."""
    q = quantile
    evidence: dict[str, float | int | str | None] = {
        "canary_samples": len(canary_samples),
        "stable_samples": len(stable_samples),
        "quantile": q,
        "max_ratio": max_ratio,
        "alpha": alpha,
        "min_samples": min_samples,
        "test": "mann-whitney-u, one-sided (canary slower)",
    }
    short = _too_few("samples", len(canary_samples), len(stable_samples), min_samples)
    if short:
        return Verdict("inconclusive", short, evidence)
    canary_q = _quantile(canary_samples, q)
    stable_q = _quantile(stable_samples, q)
    ratio = canary_q / stable_q if stable_q > 0 else (1.0 if canary_q <= 0 else math.inf)
    test = mann_whitney_u(canary_samples, stable_samples, alternative="greater")
    evidence |= {
        "canary_quantile": canary_q,
        "stable_quantile": stable_q,
        "ratio": ratio if math.isfinite(ratio) else None,
        "u": test.u,
        "p_value": test.p_value,
        "effect": test.effect,
    }
    slower, over = test.p_value < alpha, ratio > max_ratio
    name = f"p{q * 100:g}"
    numbers = (
        f"{name} {canary_q * 1000:.1f} ms vs {stable_q * 1000:.1f} ms (ratio {ratio:.2f}, "
        f"budget {max_ratio:g}); p={test.p_value:.3g}"
    )
    if slower and over:
        return Verdict("fail", f"canary is significantly slower: {numbers}", evidence)
    if over:
        return Verdict("inconclusive", f"over budget but not significant: {numbers}", evidence)
    return Verdict("pass", f"canary latency within budget: {numbers}", evidence)


def _too_few(unit: str, canary: int, stable: int, minimum: int) -> str | None:
    if canary < minimum:
        return f"only {canary} canary {unit} so far, {minimum} needed to judge"
    if stable < minimum:
        return f"only {stable} stable {unit} so far, {minimum} needed to judge"
    return None


# -- error rate -----------------------------------------------------------------------------


def compare_error_rate(
    canary_errors: int,
    canary_total: int,
    stable_errors: int,
    stable_total: int,
    *,
    max_delta: float,
    alpha: float,
    beta: float,
    min_requests: int,
) -> Verdict:
    """Fail when P(canary rate > stable rate + max_delta) >= 1 - alpha; pass when <= beta."""
    for errors, total in ((canary_errors, canary_total), (stable_errors, stable_total)):
        if not 0 <= errors <= total:
            raise ValueError(f"error counts must lie between 0 and the total: {errors}/{total}")
    evidence: dict[str, float | int | str | None] = {
        "canary_errors": canary_errors,
        "canary_requests": canary_total,
        "canary_rate": canary_errors / canary_total if canary_total else None,
        "stable_errors": stable_errors,
        "stable_requests": stable_total,
        "stable_rate": stable_errors / stable_total if stable_total else None,
        "max_delta": max_delta,
        "fail_at": 1 - alpha,
        "pass_at": beta,
        "min_requests": min_requests,
        "test": "beta-binomial posterior, Jeffreys priors",
    }
    short = _too_few("requests", canary_total, stable_total, min_requests)
    if short:
        return Verdict("inconclusive", short, evidence)
    worse = probability_worse(canary_errors, canary_total, stable_errors, stable_total, max_delta)
    evidence["probability_worse"] = worse
    rates = (
        f"canary {canary_errors}/{canary_total}, stable {stable_errors}/{stable_total}; "
        f"P(canary worse by > {max_delta * 100:g} points) = {worse:.3f}"
    )
    if worse >= 1 - alpha:
        return Verdict("fail", f"canary error rate is higher: {rates}", evidence)
    if worse <= beta:
        return Verdict("pass", f"canary error rate is not worse: {rates}", evidence)
    return Verdict("inconclusive", f"not enough evidence either way yet: {rates}", evidence)


def probability_worse(
    canary_errors: int, canary_total: int, stable_errors: int, stable_total: int, delta: float
) -> float:
    """Posterior P(p_canary > p_stable + delta), Jeffreys priors, by numerical integration.

    The integral runs over the narrower of the two posteriors (usually the stable one, which
    has most of the traffic) as a Stieltjes sum of CDF differences, so the 1/sqrt(p)
    singularity of a Beta(1/2, n) density at zero errors needs no special care.
    """
    canary = (canary_errors + 0.5, canary_total - canary_errors + 0.5)
    stable = (stable_errors + 0.5, stable_total - stable_errors + 0.5)
    if _beta_sd(*stable) <= _beta_sd(*canary):
        # P(X > y + delta) weighted by the stable posterior dF(y)
        return _integrate(stable, lambda y: 1 - beta_cdf(y + delta, *canary))
    # P(Y < x - delta) weighted by the canary posterior dF(x)
    return _integrate(canary, lambda x: beta_cdf(x - delta, *stable))


_GRID = 96


def _integrate(weights: tuple[float, float], g: Callable[[float], float]) -> float:
    """E[g(V)] for V ~ Beta(weights): a sum of g at cell midpoints times each cell's mass."""
    a, b = weights
    mean, sd = a / (a + b), _beta_sd(a, b)
    low, high = max(0.0, mean - 12 * sd), min(1.0, mean + 12 * sd)
    # Near zero errors the density behaves like 1/sqrt(p): quadratic spacing there gives every
    # cell a similar share of the mass, which is what the midpoint rule needs.
    power = 2 if low == 0.0 else 1
    edges = [low + (high - low) * (i / _GRID) ** power for i in range(_GRID + 1)]
    cdfs = [beta_cdf(edge, a, b) for edge in edges]
    total = cdfs[0] * g(low) + (1.0 - cdfs[-1]) * g(high)
    for i in range(_GRID):
        total += (cdfs[i + 1] - cdfs[i]) * g((edges[i] + edges[i + 1]) / 2)
    return min(1.0, max(0.0, total))


def _beta_sd(a: float, b: float) -> float:
    return math.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))


def beta_cdf(x: float, a: float, b: float) -> float:
    """The regularized incomplete beta function I_x(a, b), by Lentz's continued fraction."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1) / (a + b + 2):
        return math.exp(log_front) * _continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _continued_fraction(b, a, 1 - x) / b


def _continued_fraction(a: float, b: float, x: float) -> float:
    tiny, epsilon = 1e-300, 1e-13
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 20_000):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= c * d
        if abs(c * d - 1.0) < epsilon:
            break
    return result
