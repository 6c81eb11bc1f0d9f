"""Argo-style analysis semantics: judging values, metric phases, run phases, scheduling."""

from __future__ import annotations

import math
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conveyor.core.analysis import (
    ERROR_RETRY_INTERVAL,
    SEVERITY,
    UNLIMITED,
    Measurement,
    MeasurementPhase,
    MetricResult,
    MetricSpec,
    assess_metric,
    evaluate,
    metric_phase,
    next_due,
    run_phase,
    worst,
)


def spec(**overrides: Any) -> MetricSpec:
    values: dict[str, Any] = {"name": "m", "provider": "builtin", "interval": 5.0}
    values.update(overrides)
    return MetricSpec(**values)


def result(*phases: str, start: float = 0.0, step: float = 5.0) -> MetricResult:
    measurements = tuple(
        Measurement(
            cast(MeasurementPhase, phase),
            1.0,
            start + i * step,
            start + i * step + 0.5,
            f"#{i} {phase}",
        )
        for i, phase in enumerate(phases)
    )
    return MetricResult("m", measurements)


S: MeasurementPhase = "successful"
F: MeasurementPhase = "failed"
I: MeasurementPhase = "inconclusive"  # noqa: E741
E: MeasurementPhase = "error"

# -- evaluate: Argo's EvaluateResult --------------------------------------------------------

BOTH = {"success_condition": "result <= 0.01", "failure_condition": "result > 0.05"}


@pytest.mark.parametrize(
    ("conditions", "value", "phase"),
    [
        ({}, 123, S),  # no conditions: anything measured is a success
        ({}, "text", S),
        ({"success_condition": "result <= 0.01"}, 0.005, S),
        ({"success_condition": "result <= 0.01"}, 0.02, F),  # success only: a miss fails
        ({"failure_condition": "result > 0.01"}, 0.02, F),
        ({"failure_condition": "result > 0.01"}, 0.005, S),  # failure only: a miss succeeds
        (BOTH, 0.005, S),
        (BOTH, 0.10, F),
        (BOTH, 0.03, I),  # both given, neither matches: inconclusive
        ({"success_condition": "true", "failure_condition": "true"}, 1, F),  # failure wins
        (BOTH, None, I),  # no data is never a failure (the Flagger low-traffic trap)
        (BOTH, math.nan, I),
        ({"failure_condition": "result > 0"}, None, I),
        ({}, None, I),
        ({"success_condition": "result.ready == true"}, {"ready": True}, S),
        ({"success_condition": "result.ready == true"}, {"ready": False}, F),
        ({"success_condition": "result.ready"}, {}, E),  # missing field: error, not a verdict
        ({"failure_condition": "result > 1"}, "high", E),  # type error: error
        ({"success_condition": "result + 1"}, 1, E),  # not a boolean: error
        ({"success_condition": "default(result[0], 0) < 5"}, [], S),
        ({"failure_condition": "isNaN(result[0])"}, [math.nan], F),
    ],
)
def test_evaluate(conditions: dict[str, str], value: object, phase: str) -> None:
    assert evaluate(spec(**conditions), value).phase == phase


def test_evaluate_too_few_samples_is_inconclusive() -> None:
    metric = spec(failure_condition="result > 0.01", min_sample=50)
    verdict = evaluate(metric, 0.5, sample_size=49)
    assert verdict.phase == I
    assert "only 49 samples, 50 needed" in verdict.message
    assert evaluate(metric, 0.5, sample_size=50).phase == F
    assert evaluate(metric, 0.5).phase == F  # providers without a sample size are not held back


def test_evaluate_messages_name_the_condition() -> None:
    assert evaluate(spec(**BOTH), 0.1).message == "result 0.1 matched 'result > 0.05'"
    only = spec(success_condition="result <= 0.01")
    assert evaluate(only, 0.5).message == "result 0.5 missed 'result <= 0.01'"
    error = evaluate(spec(success_condition="result.x"), 3).message
    assert "a number has no field 'x'" in error and "^" in error


# -- assess_metric: limits, counts, Argo's order --------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "phases", "expected"),
    [
        ({}, (), "running"),
        ({"count": 3}, (S, S), "running"),
        ({"count": 3}, (S, S, S), S),
        ({"count": None}, (S,) * 50, "running"),  # open-ended with an interval
        ({"interval": None}, (S,), S),  # no interval and no count: measured once
        ({"interval": None}, (), "running"),
        ({"count": 3}, (F,), F),  # failure_limit 0: the first failure fails the metric
        ({"count": 3, "failure_limit": 1}, (F,), "running"),
        ({"count": 3, "failure_limit": 1}, (F, S, F), F),
        ({"count": 3, "failure_limit": 1}, (F, S, S), S),  # within the limit at the count
        ({"count": 3, "failure_limit": UNLIMITED}, (F, F, F), S),
        ({"count": 3}, (I,), I),
        ({"count": 3, "inconclusive_limit": 1}, (I, S), "running"),
        ({"count": 3, "inconclusive_limit": 1}, (I, S, I), I),
        ({"count": 3, "inconclusive_limit": UNLIMITED}, (I, I, I), S),
        ({"count": 3}, (E, E, E, E), "running"),  # 4 errors in a row are tolerated
        ({"count": 3}, (E, E, E, E, E), E),
        ({"count": 3, "consecutive_error_limit": 0}, (E,), E),
        ({"count": 3}, (E, E, E, E, S, E, E, E, E), "running"),  # a success resets the streak
        ({"count": 2}, (E, S, E, S), S),  # errors do not count towards the count
        ({"count": 2}, (E, E, S), "running"),
        # Argo's order: failures, then inconclusives, then errors, then the count.
        ({"count": 1, "inconclusive_limit": 0}, (F,), F),
        ({"count": 2, "failure_limit": 0, "inconclusive_limit": 0}, (I, F), I),  # first wins
        ({"count": 1}, (S, F), S),  # a measurement after completion changes nothing
        ({"count": 5}, (F, S, S, S, S), F),
    ],
)
def test_metric_phase(overrides: dict[str, Any], phases: tuple[str, ...], expected: str) -> None:
    assert metric_phase(spec(**overrides), result(*phases)) == expected


def test_terminating_ends_unfinished_metrics_as_successful() -> None:
    open_ended = spec(count=None)
    assert metric_phase(open_ended, result(S, S), terminating=True) == S
    assert metric_phase(open_ended, result(), terminating=True) == S
    assert metric_phase(open_ended, result(F), terminating=True) == F  # terminal stays


def test_assessment_messages_explain_the_limit() -> None:
    message = assess_metric(spec(count=3, failure_limit=1), result(F, F)).message
    assert message == "2 failed (limit 1): #1 failed"
    assert assess_metric(spec(count=2), result(S, S)).message == (
        "2 of 2 measurements, within limits"
    )


# -- run_phase ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("phases", "expected"),
    [
        ((), S),
        ((S, S), S),
        ((S, "running"), "running"),
        (("running", F), F),  # a failure ends the run without waiting for the rest
        ((E, F, I), F),
        ((E, I, "running"), E),
        ((I, S, "running"), I),
        ((I,), I),
    ],
)
def test_run_phase(phases: tuple[str, ...], expected: str) -> None:
    assert run_phase(phases) == expected


def test_worst_orders_by_severity() -> None:
    assert worst([S, I, "running"]) == I
    assert worst([]) == S
    assert [p for p, _ in sorted(SEVERITY.items(), key=lambda kv: kv[1])] == [
        S,
        "running",
        I,
        E,
        F,
    ]


# -- next_due -------------------------------------------------------------------------------


def test_next_due_first_measurement_waits_for_the_initial_delay() -> None:
    assert next_due(spec(), result(), started_at=100.0, now=100.0) == 100.0
    assert next_due(spec(initial_delay=30.0), result(), started_at=100.0, now=100.0) == 130.0


def test_next_due_follows_the_last_finish_by_the_interval() -> None:
    done = result(S, start=100.0)  # finished at 100.5
    assert next_due(spec(count=3), done, started_at=100.0, now=101.0) == 105.5


def test_next_due_overdue_measurement_is_taken_once() -> None:
    done = result(S, start=100.0)
    due = next_due(spec(count=3), done, started_at=100.0, now=1000.0)
    assert due == 105.5  # in the past: take one now; the next is 5 s after that one
    later = done.add(Measurement(S, 1.0, 1000.0, 1000.2))
    assert next_due(spec(count=3), later, started_at=100.0, now=1000.2) == pytest.approx(1005.2)


def test_next_due_clock_stepped_back_waits_one_interval_at_most() -> None:
    done = result(S, start=5000.0)  # recorded by a clock that ran ahead
    assert next_due(spec(count=3), done, started_at=0.0, now=200.0) == 205.0


def test_next_due_none_once_complete() -> None:
    assert next_due(spec(count=2), result(S, S), 0.0, 50.0) is None
    assert next_due(spec(count=5), result(F), 0.0, 50.0) is None
    assert next_due(spec(interval=None), result(S), 0.0, 50.0) is None


def test_next_due_retries_errors_without_interval() -> None:
    once = spec(interval=None)
    assert next_due(once, result(E, start=10.0), 0.0, 11.0) == 10.5 + ERROR_RETRY_INTERVAL


# -- records --------------------------------------------------------------------------------


def test_metric_spec_rejects_impossible_settings() -> None:
    with pytest.raises(ValueError, match="needs an interval"):
        spec(interval=None, count=3)
    with pytest.raises(ValueError, match="count must be at least 1"):
        spec(count=0)
    with pytest.raises(ValueError, match="interval must be positive"):
        spec(interval=0.0)
    with pytest.raises(ValueError, match="failure_limit"):
        spec(failure_limit=-2)


def test_result_counts() -> None:
    r = result(S, F, I, E, E)
    assert (r.count, r.successful, r.failed, r.inconclusive, r.errors) == (3, 1, 1, 1, 2)
    assert r.consecutive_errors == 2
    assert result(E, S).consecutive_errors == 0


def test_json_round_trip() -> None:
    metric = spec(config={"query": "error_rate"}, count=3, failure_condition="result > 0.01")
    assert MetricSpec.from_json(metric.to_json()) == metric
    measurement = Measurement(F, [1, 2], 1.0, 2.0, "bad", {"requests": 10})
    assert Measurement.from_json(measurement.to_json()) == measurement
    nan = Measurement.from_json(Measurement(I, math.nan).to_json())
    assert isinstance(nan.value, float) and math.isnan(nan.value)


# -- properties -----------------------------------------------------------------------------

PHASES: list[MeasurementPhase] = ["successful", "failed", "inconclusive", "error"]
SPECS = st.builds(
    spec,
    count=st.none() | st.integers(1, 6),
    failure_limit=st.integers(-1, 3),
    inconclusive_limit=st.integers(-1, 3),
    consecutive_error_limit=st.integers(0, 4),
)
SEQUENCES = st.lists(st.sampled_from(PHASES), max_size=14)


def _fail_one(phases: list[MeasurementPhase], which: str, data: st.DataObject) -> list[Any]:
    candidates = [i for i, p in enumerate(phases) if p == which]
    if not candidates:
        return phases
    i = data.draw(st.sampled_from(candidates))
    return [*phases[:i], "failed", *phases[i + 1 :]]


@settings(max_examples=1000, deadline=None)
@given(SPECS, SEQUENCES, st.data())
def test_more_failures_never_improve_the_phase(
    metric: MetricSpec, phases: list[MeasurementPhase], data: st.DataObject
) -> None:
    """A success turned into a failure, all else equal, never makes the metric look better."""
    before = metric_phase(metric, result(*phases))
    after = metric_phase(metric, result(*_fail_one(phases, "successful", data)))
    assert SEVERITY[after] >= SEVERITY[before]


@settings(max_examples=1000, deadline=None)
@given(SPECS, SEQUENCES, st.sampled_from(["successful", "inconclusive"]), st.data())
def test_a_failed_metric_stays_failed_with_more_failures(
    metric: MetricSpec, phases: list[MeasurementPhase], which: str, data: st.DataObject
) -> None:
    """Not a severity order: with failure_limit 1 and inconclusive_limit 0, [I] is
    inconclusive while [F] is still running. But a failed metric never recovers."""
    if metric_phase(metric, result(*phases)) == "failed":
        assert metric_phase(metric, result(*_fail_one(phases, which, data))) == "failed"


@settings(max_examples=400, deadline=None)
@given(SPECS, SEQUENCES, st.sampled_from(PHASES))
def test_a_terminal_phase_never_changes(
    metric: MetricSpec, phases: list[MeasurementPhase], extra: MeasurementPhase
) -> None:
    before = metric_phase(metric, result(*phases))
    after = metric_phase(metric, result(*phases, extra))
    if before != "running":
        assert after == before


@settings(max_examples=300, deadline=None)
@given(SPECS, SEQUENCES)
def test_a_run_ends_within_a_bounded_number_of_measurements(
    metric: MetricSpec, phases: list[MeasurementPhase]
) -> None:
    """With a count, a metric completes after at most count + errors allowed measurements."""
    if metric.count is None or metric.consecutive_error_limit == UNLIMITED:
        return
    bound = metric.count * (metric.consecutive_error_limit + 1)
    if len(phases) >= bound:
        assert metric_phase(metric, result(*phases)) != "running"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([S, F, I, E, "running"]), max_size=6))
def test_run_phase_is_the_worst_unless_still_running(phases: list[str]) -> None:
    phase = run_phase(phases)
    if F in phases or E in phases or I in phases:
        assert phase == worst(p for p in phases if p != "running")
    elif "running" in phases:
        assert phase == "running"
    else:
        assert phase == S
