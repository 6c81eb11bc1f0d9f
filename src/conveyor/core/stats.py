"""The numbers behind ``core.judge``: posteriors, binomial tails, quantiles, ranks.

Pure Python on ``math`` alone, because the core does no I/O and pulls in no numerical
stack; the tests check every function here against scipy. Each function answers one
question the judge asks, in the form the judge asks it:

* ``probability_above`` — how sure are we that a rate (of errors, of slow requests) is above
  a limit, given k events in n trials? The Jeffreys beta posterior's upper tail.
* ``probability_worse`` — how sure are we that one rate exceeds another by more than a
  margin, both being estimated? The same posterior, for two versions at once.
* ``binomial_tail`` — the exact frequentist p-value beside the posterior, for the evidence.
* ``quantile_upper_bound`` — a distribution-free upper confidence bound on a quantile from
  order statistics (no bootstrap, no assumed shape), for "how slow is stable, at worst".
* ``mann_whitney_u`` — the rank test Conveyor's first latency judge used; kept as a tool.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal, NamedTuple

Alternative = Literal["greater", "less", "two-sided"]
EXACT_LIMIT = 8
"""Exact U distribution when the smaller sample has at most this many values and no ties."""


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


def quantile_upper_bound(samples: Sequence[float], q: float, confidence: float) -> float:
    """A value the true q-quantile lies below with at least ``confidence``: an order statistic.

    The j-th smallest of n samples exceeds the q-quantile unless at least j samples fall
    below it, so P(x_(j) >= quantile) = P(Binomial(n, q) <= j - 1) whatever the
    distribution. The smallest j reaching ``confidence`` is the bound; with too few samples
    for any j (fewer than 59 for the 95th percentile at 95%), the largest sample is the best
    there is, and it is returned.
    """
    if not samples:
        raise ValueError("quantile_upper_bound of no samples")
    ordered = sorted(samples)
    n = len(ordered)
    low, high = 1, n + 1  # the answer lies in [low, high]; n + 1 means no j reaches it
    while low < high:
        j = (low + high) // 2
        if 1.0 - binomial_tail(j, n, q) >= confidence:  # P(Bin(n, q) <= j - 1)
            high = j
        else:
            low = j + 1
    return ordered[min(low, n) - 1]


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(Binomial(n, p) >= k), exactly: the incomplete beta function I_p(k, n - k + 1)."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    return beta_cdf(p, k, n - k + 1)


def probability_above(events: int, trials: int, rate: float) -> float:
    """Posterior P(true rate > ``rate``) after ``events`` in ``trials``, Jeffreys prior.

    Beta(1/2, 1/2) is the prior whose credible bounds have close to their nominal
    frequentist coverage even for a handful of trials (Brown, Cai and DasGupta, 2001), and
    the Jeffreys tail sits between the exact and the mid-p binomial p-values.
    """
    if not 0 <= events <= trials:
        raise ValueError(f"events must lie between 0 and the trials: {events}/{trials}")
    return 1.0 - beta_cdf(rate, events + 0.5, trials - events + 0.5)


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

    # Near zero errors the density behaves like 1/sqrt(p) (and near 1 like 1/sqrt(1 - p)
    # when every request failed): spacing the cells quadratically towards such an end gives
    # every cell a similar share of the mass, which is what the midpoint rule needs.
    def spaced(t: float) -> float:
        if low == 0.0 and high == 1.0:
            return math.sin(math.pi * t / 2) ** 2
        if low == 0.0:
            return t * t
        if high == 1.0:
            return 1 - (1 - t) ** 2
        return t

    edges = [low + (high - low) * spaced(i / _GRID) for i in range(_GRID + 1)]
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
