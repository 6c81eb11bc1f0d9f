"""DORA's keys on histories whose true values are known because the test built them.

``History`` writes a service's life one scenario at a time (a good deploy, a rollout rolled
back, a release rolled back or fixed later, an incident against a release), and notes as it
goes what each key must come to: the lead time of every commit, the recovery time of every
failure. ``compute`` must find exactly those numbers.
"""

from __future__ import annotations

import itertools
import math
import statistics
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conveyor.core.dora import (
    DAY,
    HOUR,
    Commit,
    DeployKind,
    Deployment,
    Incident,
    compute,
    failure_rate_band,
    frequency_band,
    lead_time_band,
    recovery_band,
    summarize,
    week_bounds,
    weekly,
)

SINCE = 1_000_000.0
_IDS = itertools.count(1)
STEP = 10_000.0  # each scenario lives inside its own 10,000 s slot


@dataclass
class History:
    service: str
    env: str = "production"
    deployments: list[Deployment] = field(default_factory=list)
    incidents: list[Incident] = field(default_factory=list)
    commits: list[Commit] = field(default_factory=list)  # oldest first
    pending: list[Commit] = field(default_factory=list)  # committed, not yet delivered
    last_good: Deployment | None = None
    slot: int = 0
    # what the keys must be
    lead_times: list[float] = field(default_factory=list)
    recoveries: list[float] = field(default_factory=list)
    failed: int = 0
    changes: int = 0
    successes: int = 0
    rework: int = 0

    def _commit(self, n: int, t: float) -> None:
        for i in range(n):
            c = Commit(f"{self.service}-{len(self.commits):04d}", t - 1000 + 37 * i)
            self.commits.append(c)
            self.pending.append(c)

    def _deploy(
        self,
        kind: DeployKind,
        outcome: str,
        start: float,
        end: float,
        *,
        aborted: float | None = None,
        history: tuple[Commit, ...] | None = None,
    ) -> Deployment:
        if history is None:
            history = tuple(reversed(self.commits[-60:]))
        d = Deployment(
            release_id=next(_IDS),
            service=self.service,
            env=self.env,
            revision=len(self.deployments) + 1,
            kind=kind,
            outcome=outcome,  # type: ignore[arg-type]
            started_at=start,
            finished_at=end,
            aborted_at=aborted,
            commit=history[0].sha if history else None,
            history=history,
        )
        self.deployments.append(d)
        return d

    def _ship(self, kind: DeployKind, commits: int, start: float, end: float) -> Deployment:
        self._commit(commits, start)
        d = self._deploy(kind, "succeeded", start, end)
        self.lead_times += [end - c.at for c in self.pending]
        self.pending = []
        self.changes += 1
        self.successes += 1
        self.last_good = d
        return d

    def context(self) -> None:
        """A release before the period: its commits are delivered already."""
        self._commit(3, SINCE - 5000)
        self.pending = []
        self.last_good = self._deploy(DeployKind.DEPLOY, "succeeded", SINCE - 5000, SINCE - 4000)

    def next_slot(self) -> float:
        self.slot += 1
        return SINCE + self.slot * STEP

    def good(self, commits: int, duration: int) -> None:
        t = self.next_slot()
        self._ship(DeployKind.DEPLOY, commits, t, t + duration)

    def aborted(self, commits: int, abort_after: int, back_in: int) -> None:
        t = self.next_slot()
        self._commit(commits, t)
        self._deploy(
            DeployKind.DEPLOY,
            "rolled_back",
            t,
            t + abort_after + back_in,
            aborted=t + abort_after,
        )
        self.changes += 1
        self.failed += 1
        self.recoveries.append(back_in)

    def rolled_back_later(self, commits: int, after: int, back_in: int) -> None:
        t = self.next_slot()
        previous = self.last_good
        assert previous is not None
        self._ship(DeployKind.DEPLOY, commits, t, t + 60)
        self._deploy(
            DeployKind.ROLLBACK,
            "succeeded",
            t + 60 + after,
            t + 60 + after + back_in,
            history=previous.history,
        )
        self.failed += 1
        self.rework += 1
        self.recoveries.append(back_in)
        self.last_good = previous  # users are back on it

    def fixed(self, commits: int, after: int, fix_takes: int) -> None:
        t = self.next_slot()
        self._ship(DeployKind.DEPLOY, commits, t, t + 60)
        start = t + 60 + after
        self._ship(DeployKind.FIX, 1, start, start + fix_takes)
        self.failed += 1
        self.rework += 1
        self.recoveries.append(fix_takes)

    def incident(self, commits: int, opens: int, lasts: int) -> None:
        t = self.next_slot()
        d = self._ship(DeployKind.DEPLOY, commits, t, t + 60)
        self.incidents.append(
            Incident(
                len(self.incidents) + 1,
                self.service,
                self.env,
                t + 60 + opens,
                t + 60 + opens + lasts,
                d.release_id,
            )
        )
        self.failed += 1
        self.recoveries.append(lasts)


SCENARIOS = st.one_of(
    st.tuples(st.just("good"), st.integers(1, 6), st.integers(1, 900)),
    st.tuples(st.just("aborted"), st.integers(1, 4), st.integers(1, 600), st.integers(1, 300)),
    st.tuples(
        st.just("rolled_back_later"), st.integers(1, 4), st.integers(1, 3000), st.integers(1, 900)
    ),
    st.tuples(st.just("fixed"), st.integers(1, 4), st.integers(1, 3000), st.integers(1, 900)),
    st.tuples(st.just("incident"), st.integers(1, 4), st.integers(1, 3000), st.integers(1, 5000)),
)


def _expected_summary(values: list[float]) -> tuple[int, float | None, float | None]:
    if not values:
        return 0, None, None
    ordered = sorted(values)
    return len(values), statistics.median(values), ordered[math.ceil(0.9 * len(values)) - 1]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(SCENARIOS, min_size=1, max_size=12), min_size=1, max_size=3))
def test_generated_histories_give_their_true_keys(plans: list[list[tuple]]) -> None:  # type: ignore[type-arg]
    histories = []
    for n, plan in enumerate(plans):
        h = History(f"svc{n}")
        h.context()
        for name, *args in plan:
            getattr(h, name)(*args)
        histories.append(h)
    until = SINCE + 100 * STEP
    report = compute(
        [d for h in histories for d in h.deployments],
        [i for h in histories for i in h.incidents],
        since=SINCE,
        until=until,
    )
    assert [g.service for g in report.groups] == [h.service for h in histories]
    for keys, h in [*zip(report.groups, histories, strict=True), (report.total, None)]:
        hs = histories if h is None else [h]
        lead = [x for one in hs for x in one.lead_times]
        recoveries = [x for one in hs for x in one.recoveries]
        assert (keys.lead_time.count, keys.lead_time.median, keys.lead_time.p90) == (
            _expected_summary(lead)
        )
        assert (keys.recovery.count, keys.recovery.median, keys.recovery.p90) == (
            _expected_summary(recoveries)
        )
        assert keys.failed_changes == sum(one.failed for one in hs)
        assert keys.change_deployments == sum(one.changes for one in hs)
        assert keys.successful_changes == sum(one.successes for one in hs)
        assert keys.rework_deployments == sum(one.rework for one in hs)
        deployments = sum(len(one.deployments) - 1 for one in hs)  # minus the context one
        assert keys.deployments == deployments
        assert keys.per_day == sum(one.successes for one in hs) / ((until - SINCE) / DAY)
        assert keys.unrecovered == 0
        # Split by week (the dashboard's charts), the weeks add up to the period.
        weeks = weekly(keys, [d for one in hs for d in one.deployments])
        assert sum(w.successful_changes for w in weeks) == keys.successful_changes
        assert sum(w.change_deployments for w in weeks) == keys.change_deployments
        assert sum(w.failed_changes for w in weeks) == keys.failed_changes
        assert sum(w.lead_time.count for w in weeks) == keys.lead_time.count
        assert sum(w.recovery.count for w in weeks) == keys.recovery.count


def test_a_worked_example() -> None:
    """One week of one service, by hand: the numbers docs/insight.md walks through."""
    h = History("shop")
    h.context()
    h.good(2, 300)  # delivered 2 commits
    h.aborted(1, 120, 30)  # failed, recovered in 30 s
    h.good(1, 200)  # delivers the aborted commit too
    h.rolled_back_later(1, 600, 90)  # failed, recovered in 90 s
    h.incident(1, 100, 1800)  # failed, recovered in 1800 s
    report = compute(h.deployments, h.incidents, since=SINCE, until=SINCE + 7 * DAY)
    keys = report.total
    assert keys.successful_changes == 4
    assert keys.change_deployments == 5
    assert keys.failed_changes == 3
    assert keys.change_failure_rate == 3 / 5
    assert keys.rework_rate == 1 / 6
    assert keys.recovery.median == 90
    assert [f.why for f in keys.failures] == [
        "rollout rolled back",
        "rolled back by r6",
        "incident 1",
    ]
    assert keys.bands() == {
        "deployment_frequency": "high",
        "lead_time": "elite",
        "change_failure_rate": "low",
        "recovery_time": "elite",
        "rework_rate": None,
    }


def test_a_remediation_of_a_release_before_the_period_is_rework_not_a_failure() -> None:
    h = History("shop")
    h.context()
    before = h.deployments[0]
    rollback = Deployment(
        99, "shop", "production", 2, DeployKind.ROLLBACK, "succeeded", SINCE + 10, SINCE + 20
    )
    report = compute([before, rollback], [], since=SINCE, until=SINCE + DAY)
    assert report.total.failed_changes == 0
    assert report.total.rework_deployments == 1
    assert report.total.change_failure_rate is None


def test_an_open_incident_is_a_failure_not_yet_recovered() -> None:
    d = Deployment(1, "a", "production", 1, DeployKind.DEPLOY, "succeeded", SINCE, SINCE + 5)
    incident = Incident(1, "a", "production", SINCE + 50, None, 1)
    keys = compute([d], [incident], since=SINCE, until=SINCE + DAY).total
    assert keys.failed_changes == 1 and keys.unrecovered == 1 and keys.recovery.count == 0


def test_a_fix_after_an_aborted_rollout_blames_nothing_else() -> None:
    """The aborted rollout already failed; the fix that follows is rework, and the stable
    version users stayed on is not blamed."""
    rows = [
        Deployment(1, "a", "p", 1, DeployKind.DEPLOY, "succeeded", SINCE, SINCE + 5),
        Deployment(2, "a", "p", 2, DeployKind.DEPLOY, "rolled_back", SINCE + 10, SINCE + 20),
        Deployment(3, "a", "p", 3, DeployKind.FIX, "succeeded", SINCE + 30, SINCE + 40),
    ]
    keys = compute(rows, [], since=SINCE, until=SINCE + DAY).total
    assert [f.release_id for f in keys.failures] == [2]
    assert keys.rework_deployments == 1


@pytest.mark.parametrize(
    ("per_day", "band"),
    [
        (3.0, "elite"),
        (1.0, "elite"),
        (0.99, "high"),
        (1 / 7, "high"),
        (0.1, "medium"),
        (1 / 30, "medium"),
        (0.03, "low"),
        (0.0, "low"),
    ],
)
def test_frequency_bands(per_day: float, band: str) -> None:
    assert frequency_band(per_day) == band


@pytest.mark.parametrize(
    ("median", "band"),
    [
        (None, None),
        (0.0, "elite"),
        (DAY - 1, "elite"),
        (DAY, "high"),
        (6 * DAY, "high"),
        (7 * DAY, "medium"),
        (29 * DAY, "medium"),
        (30 * DAY, "low"),
    ],
)
def test_lead_time_bands(median: float | None, band: str | None) -> None:
    assert lead_time_band(median) == band


@pytest.mark.parametrize(
    ("rate", "band"),
    [
        (None, None),
        (0.0, "elite"),
        (0.05, "elite"),
        (0.051, "high"),
        (0.10, "high"),
        (0.20, "high"),
        (0.21, "low"),
        (1.0, "low"),
    ],
)
def test_failure_rate_bands(rate: float | None, band: str | None) -> None:
    assert failure_rate_band(rate) == band


@pytest.mark.parametrize(
    ("median", "band"),
    [
        (None, None),
        (59.0, "elite"),
        (HOUR - 1, "elite"),
        (HOUR, "high"),
        (DAY - 1, "high"),
        (DAY, "medium"),
        (6 * DAY, "medium"),
        (7 * DAY, "low"),
    ],
)
def test_recovery_bands(median: float | None, band: str | None) -> None:
    assert recovery_band(median) == band


def test_summary_of_nothing_and_of_one() -> None:
    assert summarize([]).to_json() == {"count": 0, "median": None, "p90": None}
    assert summarize([4.0]).to_json() == {"count": 1, "median": 4.0, "p90": 4.0}
    assert summarize([1.0, 2.0, 3.0, 10.0]).median == 2.5


@pytest.mark.parametrize(
    ("days", "expected"),
    [
        (7, [(0, 7)]),
        (14, [(0, 7), (7, 14)]),
        (30, [(0, 2), (2, 9), (9, 16), (16, 23), (23, 30)]),  # the oldest week is clipped
        (1, [(0, 1)]),
        (0, []),
    ],
)
def test_week_bounds_end_at_the_period_end(days: int, expected: list[tuple[int, int]]) -> None:
    bounds = week_bounds(SINCE, SINCE + days * DAY)
    assert bounds == [(SINCE + a * DAY, SINCE + b * DAY) for a, b in expected]


def _d(rid: int, day: float, outcome: str = "succeeded", kind: DeployKind = DeployKind.DEPLOY,
       service: str = "a") -> Deployment:  # fmt: skip
    at = SINCE + day * DAY
    return Deployment(rid, service, "p", rid, kind, outcome, at, at + 600)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        # (successful changes, changes, failed) per week of a 14-day period
        ([], [(0, 0, 0), (0, 0, 0)]),
        ([_d(1, 1), _d(2, 2), _d(3, 8)], [(2, 2, 0), (1, 1, 0)]),
        ([_d(1, 1), _d(2, 2, "rolled_back"), _d(3, 3)], [(2, 3, 1), (0, 0, 0)]),
        # a rollback ships nothing: it blames the change it replaced, in that change's week
        ([_d(1, 6), _d(2, 8, kind=DeployKind.ROLLBACK)], [(1, 1, 1), (0, 0, 0)]),
        # before the period: context only
        ([_d(1, -3), _d(2, 13)], [(0, 0, 0), (1, 1, 0)]),
        # another service counts in the total, in its own week
        ([_d(1, 1), _d(2, 9, service="b")], [(1, 1, 0), (1, 1, 0)]),
    ],
)
def test_weekly_counts_each_deployment_in_the_week_it_started(
    rows: list[Deployment], expected: list[tuple[int, int, int]]
) -> None:
    report = compute(rows, [], since=SINCE, until=SINCE + 14 * DAY)
    weeks = weekly(report.total, rows)
    assert [(w.successful_changes, w.change_deployments, w.failed_changes) for w in weeks] == (
        expected
    )
    assert [w.per_week for w in weeks] == [float(s) for s, _, _ in expected]


def test_weekly_recovery_and_lead_time_and_one_group() -> None:
    h = History("shop")
    h.context()
    h.good(2, 300)
    h.aborted(1, 120, 30)
    report = compute(h.deployments, h.incidents, since=SINCE, until=SINCE + 7 * DAY)
    [week] = weekly(report.total, h.deployments)
    assert week.recovery.median == 30 and week.change_failure_rate == 1 / 2
    assert week.lead_time == report.total.lead_time
    other = _d(50, 1, service="zzz")
    [group] = weekly(report.groups[0], [*h.deployments, other])  # zzz is not shop's
    assert group.change_deployments == 2
    clipped = weekly(compute([_d(1, 0.5)], [], since=SINCE, until=SINCE + 8 * DAY).total, [])
    assert [w.end - w.start for w in clipped] == [DAY, 7 * DAY]


def test_a_releases_commits_depend_on_where_the_period_starts() -> None:
    """Why DORA has no per-release rollup of lead times (docs/insight.md): r1 was built from
    a side branch (x1); r3 carries x1 again. Asked from before r1, x1 was delivered by r1
    and r3 delivers only x2; asked from after r2 (then the context, which never had x1),
    r3 delivers x2 and x1. A table filled once per release could give only one of these."""
    hour = 3600.0

    def deploy(n: int, history: list[list[object]], at: float) -> Deployment:
        return Deployment(
            n,
            "s",
            "production",
            n,
            DeployKind.DEPLOY,
            "succeeded",
            at,
            at + 60,
            commit=str(history[0][0]),
            history=history,
        )

    r1 = deploy(1, [["x1", 0.0], ["m0", 0.0]], 10 * hour)
    r2 = deploy(2, [["m1", 5 * hour], ["m0", 0.0]], 20 * hour)
    r3 = deploy(3, [["x2", 25 * hour], ["x1", 0.0], ["m1", 5 * hour], ["m0", 0.0]], 30 * hour)
    whole = compute([r1, r2, r3], [], since=0.0, until=40 * hour).total.lead_time
    late = compute([r2, r3], [], since=25 * hour, until=40 * hour).total.lead_time
    end = 30 * hour + 60
    assert (whole.count, late.count) == (3, 2)
    assert late == summarize([end - 25 * hour, end - 0.0])  # x2 and x1, both by r3
    # x1 at r1's end, m1 at r2's, x2 at r3's
    assert whole == summarize([10 * hour + 60, 15 * hour + 60, end - 25 * hour])
