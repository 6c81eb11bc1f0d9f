"""SLO arithmetic: error budgets and the SRE workbook's multiwindow, multi-burn-rate alerts.

Pure: the shell samples cumulative event counters (total and bad) now and then and hands
the samples here with the time; nothing reads a clock. A window's error ratio is the bad
events over all events between the newest sample and the newest sample at or before the
window's start (the oldest sample when the history is shorter than the window); a burn
rate is that ratio over the error budget's (1 - objective). Counter resets (a restarted
router) are folded in when a sample is added, as Prometheus' ``increase()`` does.

The alerts are those of *The Site Reliability Workbook*, chapter 5 ("Alerting on SLOs"),
table 5-8, for a 30-day budget (we use the same factors for 28 days, as the workbook's
generator and common practice do):

| severity | long window | short window | burn rate | budget spent when it fires |
|---|---|---|---|---|
| page   | 1h  | 5m  | 14.4 | 2% in an hour |
| page   | 6h  | 30m | 6    | 5% in six hours |
| ticket | 1d  | 2h  | 3    | 10% in a day |
| ticket | 3d  | 6h  | 1    | 10% in three days |

An alert fires while both of its windows burn faster than its rate; the short window makes
it clear soon after the burning stops.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

MINUTE = 60.0
HOUR = 3600.0
DAY = 86400.0

Severity = Literal["page", "ticket"]


@dataclass(frozen=True)
class BurnRule:
    severity: Severity
    long: float  # seconds
    short: float
    factor: float

    @property
    def name(self) -> str:
        return f"{self.severity} {_window_name(self.long)}/{_window_name(self.short)}"


RULES: tuple[BurnRule, ...] = (
    BurnRule("page", HOUR, 5 * MINUTE, 14.4),
    BurnRule("page", 6 * HOUR, 30 * MINUTE, 6.0),
    BurnRule("ticket", DAY, 2 * HOUR, 3.0),
    BurnRule("ticket", 3 * DAY, 6 * HOUR, 1.0),
)
WINDOWS: tuple[float, ...] = tuple(sorted({w for r in RULES for w in (r.long, r.short)}))


def _window_name(seconds: float) -> str:
    for unit, size in (("d", DAY), ("h", HOUR), ("m", MINUTE)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def window_name(seconds: float) -> str:
    """``300`` -> ``5m``, ``3600`` -> ``1h``, ``259200`` -> ``3d`` (PromQL ranges)."""
    return _window_name(seconds)


@dataclass(frozen=True)
class Sample:
    """Cumulative counts at ``at``: all events, and the bad ones."""

    at: float
    total: float
    bad: float


@dataclass
class Series:
    """Samples of one SLO's counters, oldest first, thinned as they age.

    Kept: every sample of the last ``fine`` seconds, one per ``coarse_step`` up to
    ``keep``, so a month of history at a 10 s sampling interval is a few thousand samples.
    Windows that start in the thinned part are up to ``coarse_step`` longer than asked.
    """

    keep: float = 30 * DAY
    fine: float = 6 * HOUR
    coarse_step: float = 5 * MINUTE
    samples: list[Sample] = field(default_factory=list)
    _offset_total: float = 0.0
    _offset_bad: float = 0.0
    _last_raw: tuple[float, float] | None = None
    _added: int = 0

    def add(self, at: float, total: float, bad: float) -> None:
        """Record raw counter values read at ``at`` (a counter that went down was reset)."""
        if self.samples and at <= self.samples[-1].at:
            return
        if self._last_raw is not None:
            last_total, last_bad = self._last_raw
            if total < last_total or bad < last_bad:
                self._offset_total += last_total
                self._offset_bad += last_bad
        self._last_raw = (total, bad)
        self.samples.append(Sample(at, total + self._offset_total, bad + self._offset_bad))
        self._thin(at)

    def _thin(self, now: float) -> None:
        """Every ``THIN_EVERY`` additions: one sample per ``coarse_step`` before the fine
        part, nothing older than ``keep`` but the one sample that anchors a full window."""
        self._added += 1
        if self._added % THIN_EVERY:
            return
        fine_from, keep_from = now - self.fine, now - self.keep
        kept: list[Sample] = []
        for s in self.samples:
            if kept and kept[-1].at < keep_from and s.at <= keep_from:
                kept[-1] = s  # the newest sample old enough to anchor the longest window
            elif s.at >= fine_from or not kept or s.at - kept[-1].at >= self.coarse_step:
                kept.append(s)
        self.samples = kept


THIN_EVERY = 32


def _at(sample: Sample) -> float:
    return sample.at


def window_ratio(
    samples: Sequence[Sample], now: float, window: float
) -> tuple[float | None, float]:
    """(bad/total over the window ending at the newest sample at or before ``now``, total).
    None when nothing was counted in the window."""
    end_index = bisect_right(samples, now, key=_at) - 1
    if end_index < 0:
        return None, 0.0
    end = samples[end_index]
    start_index = bisect_right(samples, end.at - window, hi=end_index, key=_at) - 1
    start = samples[max(start_index, 0)]
    total = end.total - start.total
    if total <= 0:
        return None, 0.0
    return (end.bad - start.bad) / total, total


def burn_rates(
    samples: Sequence[Sample], objective: float, now: float, windows: Iterable[float] = WINDOWS
) -> dict[float, float | None]:
    """Burn rate per window: how many times faster than allowed the budget is spent."""
    budget = 1.0 - objective
    out: dict[float, float | None] = {}
    for window in windows:
        ratio, _ = window_ratio(samples, now, window)
        out[window] = None if ratio is None else ratio / budget
    return out


@dataclass(frozen=True)
class AlertState:
    severity: Severity
    firing: bool
    rule: BurnRule | None  # the rule that fires (the first, in RULES order)
    burn: Mapping[float, float | None]

    def describe(self) -> str:
        if self.rule is None:
            return f"{self.severity}: not burning"
        long, short = self.burn.get(self.rule.long), self.burn.get(self.rule.short)
        return (
            f"{self.severity}: burning {long or 0:.1f}x over {_window_name(self.rule.long)} and "
            f"{short or 0:.1f}x over {_window_name(self.rule.short)} "
            f"(threshold {self.rule.factor:g}x)"
        )


def evaluate(samples: Sequence[Sample], objective: float, now: float) -> dict[Severity, AlertState]:
    """Which severities fire at ``now``."""
    return judge(burn_rates(samples, objective, now))


def judge(burn: Mapping[float, float | None]) -> dict[Severity, AlertState]:
    """Which severities fire, given the burn rate of every window (from samples, or from
    Prometheus' error ratios divided by the budget)."""
    states: dict[Severity, AlertState] = {}
    for severity in ("page", "ticket"):
        firing_rule = None
        for rule in RULES:
            if rule.severity != severity:
                continue
            long, short = burn.get(rule.long), burn.get(rule.short)
            if (
                long is not None
                and short is not None
                and long > rule.factor
                and short > rule.factor
            ):
                firing_rule = rule
                break
        states[severity] = AlertState(severity, firing_rule is not None, firing_rule, burn)
    return states


Transition = tuple[Severity, Literal["fired", "cleared"], AlertState]


def transitions(
    previous: Mapping[Severity, bool], current: Mapping[Severity, AlertState]
) -> list[Transition]:
    """What changed since the last evaluation: each alert that started or stopped firing."""
    out: list[Transition] = []
    for severity, state in current.items():
        was = previous.get(severity, False)
        if state.firing and not was:
            out.append((severity, "fired", state))
        elif was and not state.firing:
            out.append((severity, "cleared", state))
    return out


@dataclass(frozen=True)
class Budget:
    objective: float
    period: float
    error_ratio: float | None  # over the period (or the history there is)
    events: float
    covered: float  # seconds of the period the samples cover

    @property
    def consumed(self) -> float:
        """Share of the budget spent (1.0: all of it; more: overspent)."""
        if self.error_ratio is None:
            return 0.0
        return self.error_ratio / (1.0 - self.objective)

    @property
    def remaining(self) -> float:
        return 1.0 - self.consumed

    @property
    def exhausted(self) -> bool:
        return self.remaining <= 0.0


def budget(samples: Sequence[Sample], objective: float, period: float, now: float) -> Budget:
    ratio, events = window_ratio(samples, now, period)
    covered = 0.0
    if samples:
        end = min(now, samples[-1].at)
        covered = min(period, end - samples[0].at)
    return Budget(objective, period, ratio, events, covered)
