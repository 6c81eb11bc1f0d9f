"""Analysis semantics, Argo Rollouts style, as pure functions of recorded measurements.

A *metric* is measured repeatedly (every ``interval``, ``count`` times or until the run ends);
each measurement's value is judged by the metric's conditions; the metric's phase follows
from counting the judgements against its limits; the run's phase is the worst of its metrics.
Nothing here reads a clock or stores a phase: phases are recomputed from the measurements
every time (Argo's ``assessMetricStatus``), so a controller restarted from stored
measurements cannot disagree with the one that took them.

Deliberate choices, each a known trap in other tools:

* **No data is inconclusive, never failed.** A ``None`` or NaN value, or fewer samples than
  ``min_sample``, says nothing about the canary; Flagger's "no values found" failing
  low-traffic canaries is the bug this avoids.
* **Conditions that cannot be evaluated are errors**, retried up to
  ``consecutive_error_limit``, not silently true or false.
* **Every run ends.** Inconclusive is terminal, errors are bounded, and an open-ended metric
  (no ``count``) ends when the run is terminated; nothing waits on data that never comes.
* **The first terminal phase sticks.** Phases are folded over the measurements in order, so
  a measurement recorded after a metric completed cannot change its outcome.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, cast

from conveyor.core.expressions import compile_expression, kind_of
from conveyor.errors import ExpressionError, TemplateArgumentError

MeasurementPhase = Literal["successful", "failed", "inconclusive", "error"]
MetricPhase = Literal["running", "successful", "failed", "inconclusive", "error"]

DEFAULT_CONSECUTIVE_ERROR_LIMIT = 4
ERROR_RETRY_INTERVAL = 10.0
"""Seconds before a metric without an ``interval`` retries after an error (Argo's default)."""
UNLIMITED = -1
"""A ``failure_limit`` or ``inconclusive_limit`` that never ends the metric."""

SEVERITY: Mapping[str, int] = {
    "successful": 0,
    "running": 1,
    "inconclusive": 2,
    "error": 3,
    "failed": 4,
}
"""How bad a phase is; a run takes the worst phase of its metrics."""


@dataclass(frozen=True)
class MetricSpec:
    """One metric of an analysis template, with its template arguments already filled in.

    ``provider`` names a ``MetricProvider`` kind and ``config`` is that provider's own
    settings (query, url, argv...). ``count=None`` measures until the run ends when there is
    an ``interval``, and exactly once when there is not (Argo's effective count).
    """

    name: str
    provider: str
    config: Mapping[str, Any] = field(default_factory=dict)
    interval: float | None = None
    count: int | None = None
    initial_delay: float = 0.0
    success_condition: str | None = None
    failure_condition: str | None = None
    failure_limit: int = 0
    inconclusive_limit: int = 0
    consecutive_error_limit: int = DEFAULT_CONSECUTIVE_ERROR_LIMIT
    min_sample: int = 0
    timeout: float = 30.0

    def __post_init__(self) -> None:
        if self.interval is not None and self.interval <= 0:
            raise ValueError(f"metric {self.name}: interval must be positive")
        if self.count is not None and self.count < 1:
            raise ValueError(f"metric {self.name}: count must be at least 1")
        if self.count is not None and self.count > 1 and self.interval is None:
            raise ValueError(f"metric {self.name}: count {self.count} needs an interval")
        for limit in ("failure_limit", "inconclusive_limit", "consecutive_error_limit"):
            if getattr(self, limit) < UNLIMITED:
                raise ValueError(f"metric {self.name}: {limit} must be -1 (no limit) or more")

    @property
    def effective_count(self) -> int | None:
        if self.count is not None:
            return self.count
        return 1 if self.interval is None else None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "provider": self.provider,
            "config": dict(self.config),
            "interval": self.interval,
            "count": self.count,
            "initial_delay": self.initial_delay,
            "success_condition": self.success_condition,
            "failure_condition": self.failure_condition,
            "failure_limit": self.failure_limit,
            "inconclusive_limit": self.inconclusive_limit,
            "consecutive_error_limit": self.consecutive_error_limit,
            "min_sample": self.min_sample,
            "timeout": self.timeout,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MetricSpec:
        return cls(**data)


@dataclass(frozen=True)
class Measurement:
    """One judged observation of a metric, with what was seen kept as evidence.

    ``value`` is what conditions see as ``result`` (a number, a list, a JSON document...);
    ``evidence`` holds the context a reviewer needs: sample sizes, windows, thresholds.
    """

    phase: MeasurementPhase
    value: Any = None
    started_at: float = 0.0
    finished_at: float = 0.0
    message: str = ""
    evidence: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        value = self.value
        if isinstance(value, float) and not math.isfinite(value):
            value = str(value)  # JSON has no NaN or infinity; "nan" reads back as no data
        return {
            "phase": self.phase,
            "value": value,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "message": self.message,
            "evidence": dict(self.evidence),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Measurement:
        values = dict(data)
        if values.get("value") in ("nan", "inf", "-inf"):
            values["value"] = float(values["value"])
        return cls(**values)


@dataclass(frozen=True)
class MetricResult:
    """Every measurement of one metric so far, oldest first; the counts are derived."""

    name: str
    measurements: tuple[Measurement, ...] = ()

    def add(self, measurement: Measurement) -> MetricResult:
        return MetricResult(self.name, (*self.measurements, measurement))

    def _count(self, phase: MeasurementPhase) -> int:
        return sum(1 for m in self.measurements if m.phase == phase)

    @property
    def count(self) -> int:
        """Measurements that reached a judgement; errors do not count (as in Argo)."""
        return len(self.measurements) - self.errors

    @property
    def successful(self) -> int:
        return self._count("successful")

    @property
    def failed(self) -> int:
        return self._count("failed")

    @property
    def inconclusive(self) -> int:
        return self._count("inconclusive")

    @property
    def errors(self) -> int:
        return self._count("error")

    @property
    def consecutive_errors(self) -> int:
        streak = 0
        for measurement in reversed(self.measurements):
            if measurement.phase != "error":
                break
            streak += 1
        return streak

    @property
    def last(self) -> Measurement | None:
        return self.measurements[-1] if self.measurements else None


class Judgement(NamedTuple):
    """A measured value's phase and the sentence that explains it."""

    phase: MeasurementPhase
    message: str


class Assessment(NamedTuple):
    """A metric's phase and the sentence that explains it (for the reviewer and the ledger)."""

    phase: MetricPhase
    message: str


# -- one value ------------------------------------------------------------------------------


def evaluate(spec: MetricSpec, value: object, *, sample_size: int | None = None) -> Judgement:
    """Judge one measured value: Argo's ``EvaluateResult`` plus the no-data rules.

    With both conditions, a value matching neither is inconclusive; with only a success
    condition, not matching it fails; with only a failure condition, not matching it
    succeeds; with neither, any value succeeds.
    """
    if sample_size is not None and sample_size < spec.min_sample:
        return Judgement(
            "inconclusive", f"only {sample_size} samples, {spec.min_sample} needed to judge"
        )
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return Judgement("inconclusive", "no data")
    try:
        success = _condition(spec.success_condition, value)
        failure = _condition(spec.failure_condition, value)
    except ExpressionError as error:
        return Judgement("error", error.message)
    shown = _show(value)
    if failure:
        return Judgement("failed", f"result {shown} matched {spec.failure_condition!r}")
    if success is False and failure is None:
        return Judgement("failed", f"result {shown} missed {spec.success_condition!r}")
    if success is not False:
        return Judgement("successful", f"result {shown}")
    return Judgement("inconclusive", f"result {shown} matched neither condition")


def _condition(text: str | None, value: object) -> bool | None:
    if text is None:
        return None
    return compile_expression(text).evaluate_condition({"result": value})


def _show(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, str | int | bool) or value is None:
        return repr(value) if isinstance(value, str) else str(value).lower()
    return kind_of(value)


# -- one metric -----------------------------------------------------------------------------


def assess_metric(
    spec: MetricSpec, result: MetricResult, *, terminating: bool = False
) -> Assessment:
    """The metric's phase, folded over its measurements; the first terminal phase wins.

    Limits are checked in Argo's order after every measurement: failures over
    ``failure_limit``, inconclusives over ``inconclusive_limit``, consecutive errors over
    ``consecutive_error_limit``, then the count. ``terminating`` ends an unfinished metric
    as successful, which is how a run stops its open-ended metrics.
    """
    failed = inconclusive = errors = count = 0
    for measurement in result.measurements:
        phase = measurement.phase
        errors = errors + 1 if phase == "error" else 0
        count += phase != "error"
        failed += phase == "failed"
        inconclusive += phase == "inconclusive"
        if _over(failed, spec.failure_limit):
            return Assessment("failed", _limit("failed", failed, spec.failure_limit, measurement))
        if _over(inconclusive, spec.inconclusive_limit):
            limit = spec.inconclusive_limit
            return Assessment(
                "inconclusive", _limit("inconclusive", inconclusive, limit, measurement)
            )
        if _over(errors, spec.consecutive_error_limit):
            limit = spec.consecutive_error_limit
            return Assessment("error", _limit("errors in a row", errors, limit, measurement))
        wanted = spec.effective_count
        if wanted is not None and count >= wanted:
            return Assessment("successful", f"{count} of {wanted} measurements, within limits")
    if terminating:
        return Assessment("successful", f"stopped after {count} measurements, within limits")
    return Assessment("running", f"{count} measurements so far")


def metric_phase(
    spec: MetricSpec, result: MetricResult, *, terminating: bool = False
) -> MetricPhase:
    return assess_metric(spec, result, terminating=terminating).phase


def _over(value: int, limit: int) -> bool:
    return limit != UNLIMITED and value > limit


def _limit(what: str, value: int, limit: int, last: Measurement) -> str:
    detail = f": {last.message}" if last.message else ""
    return f"{value} {what} (limit {limit}){detail}"


def run_phase(phases: Iterable[str]) -> MetricPhase:
    """The run's phase: failed, else error, else inconclusive, else running until all pass.

    A failed metric fails the run at once, while other metrics may still be running: the
    rollout must not wait for the rest of a template to abort a canary that is already bad.
    """
    seen = set(phases)
    order: tuple[MetricPhase, ...] = ("failed", "error", "inconclusive", "running")
    return next((phase for phase in order if phase in seen), "successful")


def next_due(spec: MetricSpec, result: MetricResult, started_at: float, now: float) -> float | None:
    """When this metric should be measured next (a time <= now means "now"); None when done.

    Like Argo, the next measurement follows the previous one's *finish* by ``interval``, so a
    controller that was down for ten intervals takes one overdue measurement, not ten. A
    finish time in the future (the clock stepped back across a restart) is read as ``now`` so
    the metric is never starved for more than one interval.
    """
    if assess_metric(spec, result).phase != "running":
        return None
    last = result.last
    if last is None:
        return started_at + spec.initial_delay
    if spec.interval is not None:
        interval = spec.interval
    elif last.phase == "error":
        interval = ERROR_RETRY_INTERVAL
    else:
        return None
    return min(last.finished_at, now) + interval


def worst(phases: Iterable[str]) -> str:
    """The most severe phase of several (successful for none)."""
    return max(phases, key=SEVERITY.__getitem__, default="successful")


def as_measurement_phase(outcome: str) -> MeasurementPhase:
    """A judge's verdict (pass/fail/inconclusive) as a measurement phase."""
    phases = {"pass": "successful", "fail": "failed", "inconclusive": "inconclusive"}
    return cast(MeasurementPhase, phases[outcome])


# --- templates, frozen into a release's plan --------------------------------------------

_PLACEHOLDER = re.compile(r"\{\{\s*(.*?)\s*\}\}")
_ARG_REF = re.compile(r"args\.([A-Za-z_][A-Za-z0-9_-]*)")


def substitute(text: str, args: Mapping[str, str], *, where: str = "template") -> str:
    """Replace every ``{{args.NAME}}`` in ``text``; anything unknown is an error, not left in.

    A query silently left with ``{{...}}`` in it returns no data, which reads as
    "inconclusive" forever: better to fail the run with the name of what is missing.
    """

    def value(match: re.Match[str]) -> str:
        reference = _ARG_REF.fullmatch(match.group(1))
        if reference is None:
            raise TemplateArgumentError(
                f"{where}: {match.group()} is not a placeholder Conveyor knows",
                "placeholders look like {{args.NAME}}, NAME being one of the template's args",
            )
        name = reference.group(1)
        if name not in args:
            known = ", ".join(sorted(args)) or "none"
            raise TemplateArgumentError(
                f"{where}: no value for argument '{name}'", f"the arguments given are: {known}"
            )
        return args[name]

    return _PLACEHOLDER.sub(value, text)


def placeholders(text: str) -> list[tuple[str, str | None]]:
    """Each ``{{...}}`` in ``text`` with the argument it names (None when it is not args.X)."""
    found = []
    for match in _PLACEHOLDER.finditer(text):
        reference = _ARG_REF.fullmatch(match.group(1))
        found.append((match.group(), reference.group(1) if reference else None))
    return found


def stand_in(text: str, replacement: str) -> str:
    """``text`` with every placeholder replaced by ``replacement`` (for compile-time checks)."""
    return _PLACEHOLDER.sub(lambda _: replacement, text)


def _fill(value: Any, args: Mapping[str, str], where: str) -> Any:
    if isinstance(value, str):
        return substitute(value, args, where=where)
    if isinstance(value, list | tuple):
        return [_fill(item, args, where) for item in value]
    if isinstance(value, Mapping):
        return {key: _fill(item, args, where) for key, item in value.items()}
    return value


@dataclass(frozen=True)
class AnalysisTemplate:
    """An ``analysis:`` template as a release froze it: metrics with placeholders unfilled.

    Frozen at release creation so a canary started last week is judged by the template it
    started with, not by this morning's file; filled per run, because the arguments (the
    revisions being compared) are only known once the store has numbered the release.
    """

    args: tuple[str, ...]
    metrics: tuple[MetricSpec, ...]

    def filled(self, args: Mapping[str, str]) -> tuple[MetricSpec, ...]:
        missing = [name for name in self.args if name not in args]
        if missing:
            raise TemplateArgumentError(
                f"analysis template needs argument '{missing[0]}', which was not given",
                f"it declares: {', '.join(self.args)}",
            )
        return tuple(_filled(spec, args) for spec in self.metrics)

    def to_json(self) -> dict[str, Any]:
        return {"args": list(self.args), "metrics": [m.to_json() for m in self.metrics]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AnalysisTemplate:
        return cls(
            tuple(data.get("args", ())), tuple(MetricSpec.from_json(m) for m in data["metrics"])
        )


def _filled(spec: MetricSpec, args: Mapping[str, str]) -> MetricSpec:
    where = f"metric {spec.name}"
    success, failure = spec.success_condition, spec.failure_condition
    return dataclasses.replace(
        spec,
        config=_fill(dict(spec.config), args, where),
        success_condition=None if success is None else substitute(success, args, where=where),
        failure_condition=None if failure is None else substitute(failure, args, where=where),
    )
