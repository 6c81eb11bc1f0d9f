"""Burn-rate alerts on synthetic series: they fire and clear at the moments arithmetic says.

Traffic is 100 requests/s sampled every 10 s against a 99.9% objective (budget 0.1%). A
window's error ratio is exact on this grid, so each moment below is computed by hand in
the row's comment; the evaluation must land on the first sample past it.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conveyor.core.slo import (
    DAY,
    HOUR,
    RULES,
    Sample,
    Series,
    budget,
    burn_rates,
    evaluate,
    transitions,
    window_name,
)

STEP = 10.0
RATE = 100.0  # requests per second
OBJECTIVE = 0.999


def _series(ratio_at, until: float) -> list[Sample]:  # type: ignore[no-untyped-def]
    samples = [Sample(0.0, 0.0, 0.0)]
    total = bad = 0.0
    t = 0.0
    while t < until:
        t += STEP
        total += RATE * STEP
        bad += RATE * STEP * ratio_at(t - STEP)
        samples.append(Sample(t, total, bad))
    return samples


def _moments(samples: list[Sample]) -> list[tuple[float, str, str]]:
    firing = {"page": False, "ticket": False}
    seen = []
    for index in range(1, len(samples)):
        now = samples[index].at
        states = evaluate(samples, OBJECTIVE, now)
        for severity, change, _ in transitions(firing, states):
            seen.append((now, severity, change))
            firing[severity] = change == "fired"
    return seen


T0 = DAY  # a day of clean history first


def test_a_two_hour_burn_at_20x_pages_then_tickets_then_clears() -> None:
    """2% errors (20x) from T0 for 2 h.

    page 1h/5m at 14.4x: the hour's ratio passes 1.44% after 0.72 h = 2592 s -> T0+2600.
    ticket 3d/6h at 1x: with one clean day before, 2%*x/(86400+x) > 0.1% after 4547.4 s
    -> T0+4550 (the 6h window passed 0.1% at 1080 s already).
    page clears when the 30m window of the 6h/30m rule (the 5m one cleared earlier) drops
    to 0.6%: 1260 s after the burn stops. ticket clears when the 6h window drops to 0.1%:
    20520 s after.
    """
    stop = T0 + 2 * HOUR
    samples = _series(lambda t: 0.02 if T0 <= t < stop else 0.0, stop + 25_000)
    assert _moments(samples) == [
        (T0 + 2600, "page", "fired"),
        (T0 + 4550, "ticket", "fired"),
        (stop + 1260, "page", "cleared"),
        (stop + 20520, "ticket", "cleared"),
    ]


def test_a_slow_burn_at_5x_tickets_and_never_pages() -> None:
    """0.5% errors (5x): the 3d/6h rule fires once 0.5%*x/(86400+x) > 0.1%, at 21600 s
    (the 6h window is past 0.1% from 4320 s); the 1d/2h rule (3x) would need 51840 s."""
    samples = _series(lambda t: 0.005 if t >= T0 else 0.0, T0 + 30_000)
    assert _moments(samples) == [(T0 + 21610, "ticket", "fired")]


def test_a_short_spike_pages_nobody() -> None:
    """100% errors for 30 s are 0.83% of the hour, under 1.44%: nobody is paged. For
    three minutes they pass 1.44% of the hour after 51.8 s: paged at the next sample."""
    half_minute = _series(lambda t: 1.0 if T0 <= t < T0 + 30 else 0.0, T0 + 4000)
    assert _moments(half_minute) == []
    three_minutes = _series(lambda t: 1.0 if T0 <= t < T0 + 180 else 0.0, T0 + 4000)
    fired = _moments(three_minutes)
    assert fired[0] == (T0 + 60, "page", "fired")


def test_no_traffic_burns_nothing() -> None:
    samples = [Sample(float(t), 5.0, 5.0) for t in range(0, 4000, 10)]
    assert all(v is None for v in burn_rates(samples, OBJECTIVE, 3990).values())
    assert not any(s.firing for s in evaluate(samples, OBJECTIVE, 3990).values())


def test_the_rules_are_the_workbooks() -> None:
    assert [(r.severity, window_name(r.long), window_name(r.short), r.factor) for r in RULES] == [
        ("page", "1h", "5m", 14.4),
        ("page", "6h", "30m", 6.0),
        ("ticket", "1d", "2h", 3.0),
        ("ticket", "3d", "6h", 1.0),
    ]


def test_budget_remaining() -> None:
    samples = _series(
        lambda t: 0.0005 if t >= DAY else 0.0, 2 * DAY
    )  # half the budget, half the time
    found = budget(samples, OBJECTIVE, 28 * DAY, 2 * DAY)
    assert found.error_ratio == pytest.approx(0.00025)
    assert found.remaining == pytest.approx(0.75)
    assert not found.exhausted
    spent = budget(_series(lambda t: 0.01, HOUR), OBJECTIVE, 28 * DAY, HOUR)
    assert spent.exhausted and spent.remaining == pytest.approx(-9.0)


def test_a_counter_reset_is_not_a_negative_burn() -> None:
    series = Series()
    series.add(0, 0, 0)
    series.add(10, 1000, 10)
    series.add(20, 100, 1)  # the router restarted: its counters start again
    series.add(30, 1100, 11)
    assert series.samples[-1] == Sample(30, 2100, 21)
    ratio = burn_rates(series.samples, OBJECTIVE, 30, windows=[300])[300]
    assert ratio == pytest.approx(21 / 2100 / 0.001)


@settings(max_examples=12)
@given(st.floats(0.0, 0.05), st.integers(1, 40))
def test_a_thinned_series_stays_small_and_agrees_with_the_full_one(ratio: float, days: int) -> None:
    series = Series()
    full = []
    t = total = bad = 0.0
    step = 120.0
    while t < days * DAY:
        t += step
        total += 6000
        bad += 6000 * ratio
        series.add(t, total, bad)
        full.append(Sample(t, total, bad))
    assert len(series.samples) < 30 * DAY / 300 + 6 * HOUR / step + 64
    for window in (300.0, HOUR, DAY, 3 * DAY):
        thin = burn_rates(series.samples, OBJECTIVE, t, windows=[window])[window]
        exact = burn_rates(full, OBJECTIVE, t, windows=[window])[window]
        assert thin == pytest.approx(exact, rel=1e-6, abs=1e-9)
