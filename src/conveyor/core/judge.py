"""Is the new version worse? Sequential judgements that stop as soon as the evidence allows.

Three questions are asked while a release is exposed, each many times as traffic arrives:

* the **error-rate trigger** (``judge_error_window``, every controller tick): is the new
  version's error rate above the environment's ``rollback.error_rate`` limit?
* **errors against stable** (``compare_error_rate``, every analysis interval): is the
  canary's error rate above stable's by more than ``max_delta``?
* **latency against stable** (``compare_latency``, every analysis interval): is the canary's
  quantile (p95) slower than stable's by more than *both* ``max_ratio`` and ``min_delta``?

**One test for all three: a rate above a limit, by a beta posterior.** Errors are Bernoulli
events; so is "slower than the tolerated latency", and "the p95 is over T" is exactly "more
than 5% of requests are slower than T". So every judge asks how sure we are, under Jeffreys
priors Beta(1/2, 1/2), that a rate exceeds a limit (``stats.probability_above``; two
estimated rates in ``stats.probability_worse``). The posterior decides *by effect size*: 2
errors in 8 requests against a 5% limit is already strong evidence, 2 in 40 is none; a
canary whose every request is 300 ms late is judged on its first handful, one 1.5 ms slower
than stable never is, because 1.5 ms is inside the tolerance, not merely "not significant".

**Fail early, pass early, otherwise say so.** A judge fails when P(worse) >= 1 - level and
passes when P(worse) <= ``beta``; in between it is inconclusive and the caller looks again
with more traffic. No fixed minimum sample count: a 100x slowdown needs a handful of
requests, a 0.1-point error increase needs thousands, and the posterior knows which is which.

**Repeated looks spend alpha.** Looking again and again at accumulating data and stopping at
the first "significant" look inflates false alarms without bound (Armitage, McPherson and
Rowe, 1969); Bayesian posteriors are no exception when judged by their frequentist error
rate (Deng, Lu and Chen, 2016). The j-th look is therefore held to the level
``spent_alpha(alpha, j) = alpha * 6 / (pi^2 j^2)``, which sums to ``alpha`` over any number of
looks — Bonferroni-style alpha spending, valid for unlimited looks as far as each look's test
is calibrated (the Jeffreys posterior nearly is; the resulting rates are measured, not
assumed). Always-valid p-values and the mixture SPRT (Johari, Koomen, Pekelis and Walsh,
2017) solve the same problem more tightly, but they want the event stream and a normal
approximation; the judges get counters, and a handful of errors. What a look is depends on
the data:

* comparisons see everything since their analysis run began, measured every ``interval``;
  but a measurement that brought three more requests is hardly a new look, and counting
  measurements would make a slow canary pay for the clock. So look j is the j-th *doubling*
  of the canary's traffic (``information_look``: up to 10 requests is look 1, 20 is look 2,
  40 look 3, ...): the geometric epochs of "stitched" time-uniform boundaries (Howard,
  Ramdas, McAuliffe and Sekhon, 2021): looks within one doubling see nearly the same data,
  and one level covers them up to a small factor. Measuring every second costs no more
  false alarms than every minute, and the level decays like 1/log^2 of the traffic, so
  evidence (which grows like its square root) always wins in the end;
* the trigger sees a sliding ``window`` of counters and is looked at every tick, so ticks
  are not looks (a window looked at ten times is one window): look j is the j-th window's
  worth of traffic, ``max(1, requests the router has ever counted for the version /
  requests in the window)``. A new version's first window is judged at the loosest level —
  which is where a broken release shows itself — and a healthy one that has been serving for
  an hour is judged at a level so strict only an outage passes it. The false-rollback rate
  stays bounded however long a canary is paused, at any traffic (bench/judge_sim.py).

**Two failures, not one.** ``MIN_EVENTS``: no judge fails a version on a single failed (or
slow) request. A lone error is the commonest event a healthy version produces: at 0.5% errors
one of a canary's first three requests fails 1.5% of the time, more than the whole
false-rollback budget, and a sliding window over little traffic often holds one request.
Under a Jeffreys prior one error in one request gives P(rate > 5%) = 0.995, so the floor has
to be explicit. Latency also asks for ``min_samples`` (10) canary samples: a fresh process
answers its first one or two requests slowly (imports, caches, connection pools), and those
belong to one event, not to independent ones.

Defaults and their measured false-rollback rates are in docs/canary.md. Everything is pure
Python (``core.stats``, ``math`` only); scipy checks the numbers in the tests.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from conveyor.core.stats import (
    binomial_tail,
    probability_above,
    probability_worse,
    quantile_upper_bound,
)
from conveyor.core.stats import quantile as _quantile

Outcome = Literal["pass", "fail", "inconclusive"]
Evidence = dict[str, float | int | str | None]

MIN_EVENTS = 2
"""Failed (or too slow) requests a judge needs before it may fail a version."""
TRIGGER_ALPHA = 0.1
"""Alpha the error-rate trigger spends over a version's life; its first window is judged at
P(rate above the limit) >= 0.939, the j-th at 1 - 0.061 / j^2. Looser than the comparisons'
0.05 because it is held against a limit ten times a healthy error rate (a false alarm needs
a cluster of errors a healthy version rarely produces: 0.26% of healthy canaries), and
because it is what stops 20% errors at 5% of 40 req/s within five seconds: in a simplified
simulation of the trigger alone, 0.05 put that median at 4.7 s, 0.1 at 3.8 s."""
INFORMATION_UNIT = 10
"""Canary requests (or samples) of a comparison's first look; each doubling is one more."""


@dataclass(frozen=True)
class Verdict:
    """The judge's answer, one sentence of why, and the numbers behind it for the ledger."""

    outcome: Outcome
    detail: str
    evidence: Mapping[str, float | int | str | None] = field(default_factory=dict)


def spent_alpha(alpha: float, look: float) -> float:
    """The level of look ``look`` (from 1): alpha * 6 / (pi^2 look^2), summing to alpha."""
    return alpha * 6 / (math.pi**2 * max(1.0, look) ** 2)


def information_look(trials: int) -> float:
    """Which look a comparison with this much canary traffic is: 1 + doublings of the unit."""
    return 1.0 + math.log2(max(trials, INFORMATION_UNIT) / INFORMATION_UNIT)


# -- the error-rate trigger -----------------------------------------------------------------


def judge_error_window(
    errors: int,
    requests: int,
    *,
    limit: float,
    min_requests: int = 1,
    lifetime_requests: int | None = None,
    alpha: float = TRIGGER_ALPHA,
) -> Verdict:
    """Fail when the window shows the version's error rate above ``limit``, spending alpha.

    ``lifetime_requests`` (all requests the router has counted for the version) says how
    many windows' worth of traffic have been judged before this one; unknown counts as the
    first. The trigger never passes a version: "inconclusive" means "not shown to be bad".
    """
    _check_counts(errors, requests)
    look = 1.0
    if lifetime_requests is not None and requests > 0 and lifetime_requests > requests:
        look = lifetime_requests / requests
    level = spent_alpha(alpha, look)
    evidence: Evidence = {
        "requests": requests,
        "errors": errors,
        "error_rate": round(errors / requests, 6) if requests else None,
        "threshold": limit,
        "min_requests": min_requests,
        "look": round(look, 3),
        "fail_at": round(1 - level, 6),
        "test": "beta posterior P(rate > limit), Jeffreys prior, alpha spent per window",
    }
    if requests < max(1, min_requests):
        return Verdict("inconclusive", f"{requests} requests, {min_requests} needed", evidence)
    if errors < MIN_EVENTS or errors / requests <= limit:
        # Quick exit, and what the posterior would say anyway: at or below the limit,
        # P(rate > limit) is at most about one half.
        return Verdict("inconclusive", f"{errors} of {requests} requests failed", evidence)
    above = probability_above(errors, requests, limit)
    evidence["probability_above"] = round(above, 6)
    detail = f"P(rate > {limit:.1%}) = {above:.3f}, needed {1 - level:.3f}"
    return Verdict("fail" if above >= 1 - level else "inconclusive", detail, evidence)


# -- errors against stable ------------------------------------------------------------------


def compare_error_rate(
    canary_errors: int,
    canary_total: int,
    stable_errors: int,
    stable_total: int,
    *,
    max_delta: float,
    alpha: float,
    beta: float,
    min_requests: int = 1,
) -> Verdict:
    """Fail when P(canary rate > stable rate + max_delta) >= 1 - spent alpha; pass <= beta.

    The level is that of the look the canary's traffic amounts to (``information_look``).
    Passing is not corrected for repeated looks: a pass is a posterior statement, valid
    under optional stopping when the prior is (Rouder, 2014), and a canary that passes
    wrongly is one at most ``max_delta`` worse, which is what ``max_delta`` tolerates.
    """
    _check_counts(canary_errors, canary_total)
    _check_counts(stable_errors, stable_total)
    look = information_look(canary_total)
    fail_at = 1 - spent_alpha(alpha, look)
    evidence: Evidence = {
        "canary_errors": canary_errors,
        "canary_requests": canary_total,
        "canary_rate": canary_errors / canary_total if canary_total else None,
        "stable_errors": stable_errors,
        "stable_requests": stable_total,
        "stable_rate": stable_errors / stable_total if stable_total else None,
        "max_delta": max_delta,
        "look": round(look, 3),
        "fail_at": round(fail_at, 6),
        "pass_at": beta,
        "min_requests": min_requests,
        "test": "beta-binomial posterior, Jeffreys priors, alpha spent per look",
    }
    short = _too_few("requests", canary_total, stable_total, max(1, min_requests))
    if short:
        return Verdict("inconclusive", short, evidence)
    worse = probability_worse(canary_errors, canary_total, stable_errors, stable_total, max_delta)
    evidence["probability_worse"] = worse
    rates = (
        f"canary {canary_errors}/{canary_total}, stable {stable_errors}/{stable_total}; "
        f"P(canary worse by > {max_delta * 100:g} points) = {worse:.3f}"
    )
    if worse >= fail_at and canary_errors >= MIN_EVENTS:
        return Verdict("fail", f"canary error rate is higher: {rates}", evidence)
    if worse <= beta:
        return Verdict("pass", f"canary error rate is not worse: {rates}", evidence)
    if worse >= fail_at:
        return Verdict("inconclusive", f"one failed request is not enough: {rates}", evidence)
    return Verdict(
        "inconclusive",
        f"not enough evidence either way yet: {rates} (fails at {fail_at:.3f}, passes at {beta:g})",
        evidence,
    )


# -- latency against stable -----------------------------------------------------------------


def compare_latency(
    canary_samples: Sequence[float],
    stable_samples: Sequence[float],
    *,
    quantile: float,
    max_ratio: float,
    min_delta: float,
    alpha: float,
    beta: float,
    min_samples: int = 1,
) -> Verdict:
    """Fail a canary whose quantile is over stable's by more than the tolerance, with evidence.

    The tolerance of a stable latency s is ``max(s * max_ratio, s + min_delta)``: 20% of a
    300 ms p95, but never less than 25 ms, because fresh processes differ by milliseconds
    for reasons no user notices. The threshold T is the tolerance of an upper confidence
    bound of stable's quantile (its estimate is uncertain too, ``stats.quantile_upper_bound``
    at 1 - alpha); the canary's quantile is over T exactly when more than 1 - quantile of
    its requests are, so the test counts them: fail when P(rate of canary requests over T >
    1 - quantile) >= 1 - spent alpha, with at least ``MIN_EVENTS`` of them. Pass when the
    same probability, for the tolerance of stable's point estimate, is at most ``beta``
    (with no slow request at all, about 40 samples for a p95).
    """
    q = quantile
    n_canary, n_stable = len(canary_samples), len(stable_samples)
    look = information_look(n_canary)
    level = spent_alpha(alpha, look)
    evidence: Evidence = {
        "canary_samples": n_canary,
        "stable_samples": n_stable,
        "quantile": q,
        "max_ratio": max_ratio,
        "min_delta": min_delta,
        "look": round(look, 3),
        "fail_at": round(1 - level, 6),
        "pass_at": beta,
        "min_samples": min_samples,
        "test": "share of canary requests over stable's tolerated quantile, beta posterior",
    }
    short = _too_few("samples", n_canary, n_stable, max(1, min_samples))
    if short:
        return Verdict("inconclusive", short, evidence)

    def tolerated(stable: float) -> float:
        return max(stable * max_ratio, stable + min_delta)

    canary_q, stable_q = _quantile(canary_samples, q), _quantile(stable_samples, q)
    bound = max(stable_q, quantile_upper_bound(stable_samples, q, 1 - alpha))
    threshold, pass_threshold = tolerated(bound), tolerated(stable_q)
    over = sum(1 for value in canary_samples if value > threshold)
    over_pass = sum(1 for value in canary_samples if value > pass_threshold)
    slow = probability_above(over, n_canary, 1 - q)
    slow_pass = probability_above(over_pass, n_canary, 1 - q)
    ratio = canary_q / stable_q if stable_q > 0 else (1.0 if canary_q <= 0 else math.inf)
    evidence |= {
        "canary_quantile": canary_q,
        "stable_quantile": stable_q,
        "stable_quantile_bound": bound,
        "ratio": ratio if math.isfinite(ratio) else None,
        "delta": canary_q - stable_q,
        "threshold": threshold,
        "over_threshold": over,
        "probability_over": slow,
        "p_value": binomial_tail(over, n_canary, 1 - q),
        "pass_threshold": pass_threshold,
        "over_pass_threshold": over_pass,
        "probability_over_pass": slow_pass,
    }
    name = f"p{q * 100:g}"
    numbers = (
        f"{name} {_ms(canary_q)} vs {_ms(stable_q)} (ratio {ratio:.2f}; tolerated "
        f"max({max_ratio:g}x, +{min_delta * 1000:g} ms))"
    )
    if over >= MIN_EVENTS and slow >= 1 - level:
        return Verdict(
            "fail",
            f"canary is slower than tolerated: {numbers}; {over} of {n_canary} canary "
            f"requests took over {_ms(threshold)}, P({name} over it) = {slow:.3f}",
            evidence,
        )
    if slow_pass <= beta:
        return Verdict("pass", f"canary latency within tolerance: {numbers}", evidence)
    if canary_q > pass_threshold:
        return Verdict("inconclusive", f"over tolerance, not yet significant: {numbers}", evidence)
    return Verdict(
        "inconclusive",
        f"within tolerance so far, too few samples to pass: {numbers}; "
        f"P({name} over {_ms(pass_threshold)}) = {slow_pass:.3f}, passes at {beta:g}",
        evidence,
    )


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _too_few(unit: str, canary: int, stable: int, minimum: int) -> str | None:
    if canary < minimum:
        return f"only {canary} canary {unit} so far, {minimum} needed to judge"
    if stable < minimum:
        return f"only {stable} stable {unit} so far, {minimum} needed to judge"
    return None


def _check_counts(errors: int, total: int) -> None:
    if not 0 <= errors <= total:
        raise ValueError(f"error counts must lie between 0 and the total: {errors}/{total}")
