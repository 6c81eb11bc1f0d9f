"""DORA's five keys, computed from what the ledger knows: pure, no clock, no store.

The shell (``application/insight.py``) reads the finished releases of a period (and, per
service and environment, the last successful one before it, so the first release of the
period knows which commits it is the first to deliver) and the incidents linked to them,
and hands them here as plain records. Everything this module decides is written down in
docs/insight.md; the short version:

* a **deployment** is a release that started rolling out and finished (succeeded, rolled
  back or failed); releases that were cancelled, rejected or still running are not;
* a **change deployment** is one that ships something new: a deploy, a retry or a fix;
  a rollback redeploys something old and only counts as rework;
* a change deployment **failed** when its rollout was aborted (automatically or by hand),
  when a rollback or a fix replaced it while it was the version users had, or when an
  incident was opened against it (the release running when the incident started);
* it **recovered** when users were back on a good version: the rollback of its rollout
  finished, the rollback/fix that replaced it succeeded, and every incident against it was
  resolved -- the latest of these;
* **lead time** is, per commit, the time from the commit (committer time, recorded at build)
  to the end of the first successful production rollout that contained it.

Bands are those of the DORA 2024 report (Accelerate State of DevOps Report 2024); where its
clusters overlap or leave gaps, the choice made is documented beside the thresholds.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal, NamedTuple

REPORT = "DORA Accelerate State of DevOps Report 2024"
FAILURES_SHOWN = 50
"""Failed deployments listed per group, newest last (the counts cover all of them)."""
DAY = 86400.0
HOUR = 3600.0
WEEK = 7 * DAY
MONTH = 30 * DAY


class DeployKind(StrEnum):
    DEPLOY = "deploy"
    RETRY = "retry"
    FIX = "fix"  # a roll-forward that repairs a failed release (deploy --fix)
    ROLLBACK = "rollback"

    @property
    def changes(self) -> bool:
        """Ships something new (counted in frequency, lead time and failure rate)."""
        return self is not DeployKind.ROLLBACK

    @property
    def rework(self) -> bool:
        """Unplanned: made because production went wrong (DORA 2024's rework rate)."""
        return self in (DeployKind.ROLLBACK, DeployKind.FIX)


Outcome = Literal["succeeded", "rolled_back", "failed"]
Band = Literal["elite", "high", "medium", "low"]


class Commit(NamedTuple):
    """A commit and its committer time (unix seconds). A tuple: histories are long and a
    DORA question over a whole organization reads hundreds of thousands of them."""

    sha: str
    at: float


@dataclass(frozen=True)
class Deployment:
    """One finished rollout of a release, as the store recorded it."""

    release_id: int
    service: str
    env: str
    revision: int
    kind: DeployKind
    outcome: Outcome
    started_at: float  # the release was created
    finished_at: float  # it reached its outcome
    aborted_at: float | None = None  # when its rollout was aborted, if it was
    commit: str | None = None
    history: Sequence[Sequence[Any]] = ()
    """The artifact's commits, newest first, head included: ``Commit``s, or the ``[sha,
    time]`` pairs as the build recorded them (read lazily: only the new ones are looked at)."""


@dataclass(frozen=True)
class Incident:
    id: int
    service: str | None
    env: str | None
    opened_at: float
    resolved_at: float | None
    release_id: int | None  # the release running when it opened


@dataclass(frozen=True)
class Failure:
    """A change deployment that failed, and when users were back on a good version."""

    release_id: int
    service: str
    env: str
    revision: int
    why: str  # "aborted", "rolled back by r7", "fixed by r8", "incident 3"
    failed_at: float
    restored_at: float | None  # None: not recovered yet

    @property
    def recovery(self) -> float | None:
        if self.restored_at is None:
            return None
        return max(0.0, self.restored_at - self.failed_at)


@dataclass(frozen=True)
class Summary:
    """A distribution: how many, the median and the 90th percentile (nearest rank)."""

    count: int
    median: float | None
    p90: float | None

    def to_json(self) -> dict[str, Any]:
        return {"count": self.count, "median": self.median, "p90": self.p90}


@dataclass(frozen=True)
class Keys:
    """The five keys of one group (a service in an environment, or everything) in a period."""

    service: str | None  # None: every service
    env: str | None
    since: float
    until: float
    deployments: int  # every deployment, rollbacks included
    change_deployments: int  # deploys, retries and fixes
    successful_changes: int
    failed_changes: int
    rework_deployments: int
    lead_time: Summary
    recovery: Summary
    unrecovered: int
    failures: tuple[Failure, ...] = field(default=(), repr=False)
    leads: tuple[tuple[float, float], ...] = field(default=(), repr=False)
    """Each delivered commit's lead time, with when its deployment started: (started, s)."""

    @property
    def days(self) -> float:
        return max(self.until - self.since, 1.0) / DAY

    @property
    def per_day(self) -> float:
        return self.successful_changes / self.days

    @property
    def change_failure_rate(self) -> float | None:
        return self.failed_changes / self.change_deployments if self.change_deployments else None

    @property
    def rework_rate(self) -> float | None:
        return self.rework_deployments / self.deployments if self.deployments else None

    def bands(self) -> dict[str, Band | None]:
        return {
            "deployment_frequency": frequency_band(self.per_day),
            "lead_time": lead_time_band(self.lead_time.median),
            "change_failure_rate": failure_rate_band(self.change_failure_rate),
            "recovery_time": recovery_band(self.recovery.median),
            "rework_rate": None,  # the 2024 report publishes no clusters for it
        }

    def to_json(self, *, failures: bool = True) -> dict[str, Any]:
        """``failures``: list the newest failed deployments (the totals always count all)."""
        bands = self.bands()
        shown = self.failures[-FAILURES_SHOWN:] if failures else ()
        return {
            "service": self.service,
            "env": self.env,
            "since": self.since,
            "until": self.until,
            "deployment_frequency": {
                "deployments": self.successful_changes,
                "per_day": self.per_day,
                "per_week": self.per_day * 7,
                "band": bands["deployment_frequency"],
            },
            "lead_time": {**self.lead_time.to_json(), "band": bands["lead_time"]},
            "change_failure_rate": {
                "rate": self.change_failure_rate,
                "failed": self.failed_changes,
                "changes": self.change_deployments,
                "band": bands["change_failure_rate"],
            },
            "recovery_time": {
                **self.recovery.to_json(),
                "unrecovered": self.unrecovered,
                "band": bands["recovery_time"],
            },
            "rework_rate": {
                "rate": self.rework_rate,
                "rework": self.rework_deployments,
                "deployments": self.deployments,
                "band": None,
            },
            "failures_shown": len(shown),
            "failures": [
                {
                    "release_id": f.release_id,
                    "service": f.service,
                    "env": f.env,
                    "revision": f.revision,
                    "why": f.why,
                    "failed_at": f.failed_at,
                    "restored_at": f.restored_at,
                    "recovery": f.recovery,
                }
                for f in shown
            ],
        }


@dataclass(frozen=True)
class Report:
    """Every group of a question, and the whole."""

    since: float
    until: float
    total: Keys
    groups: tuple[Keys, ...]
    report: str = REPORT

    def to_json(self) -> dict[str, Any]:
        return {
            "since": self.since,
            "until": self.until,
            "bands_from": self.report,
            "total": self.total.to_json(),
            # one service asked: its failures are the total's; many: the total lists them
            "services": [g.to_json(failures=False) for g in self.groups],
        }


# --- bands (DORA 2024) -----------------------------------------------------------------


def frequency_band(per_day: float) -> Band:
    """Elite: on demand (a deploy a day or more, on average); high: between once a day and
    once a week; medium: between once a week and once a month; low: less often."""
    if per_day >= 1.0:
        return "elite"
    if per_day * 7 >= 1.0:
        return "high"
    if per_day * 30 >= 1.0:
        return "medium"
    return "low"


def lead_time_band(median: float | None) -> Band | None:
    """Elite: less than a day; high: a day to a week; medium: a week to a month; low: more."""
    if median is None:
        return None
    if median < DAY:
        return "elite"
    if median < WEEK:
        return "high"
    if median < MONTH:
        return "medium"
    return "low"


def failure_rate_band(rate: float | None) -> Band | None:
    """2024 clusters: elite 5%, high 20%, medium 10%, low 40%. The medium cluster fails less
    often than the high one, so this key alone cannot tell them apart: up to 5% is elite,
    up to 20% high (medium's 10% included), above that low."""
    if rate is None:
        return None
    if rate <= 0.05:
        return "elite"
    if rate <= 0.20:
        return "high"
    return "low"


def recovery_band(median: float | None) -> Band | None:
    """2024: elite under an hour; high and medium under a day; low a week to a month. Under
    a day is called high; the gap between a day and a week, medium; longer, low."""
    if median is None:
        return None
    if median < HOUR:
        return "elite"
    if median < DAY:
        return "high"
    if median < WEEK:
        return "medium"
    return "low"


# --- the computation -------------------------------------------------------------------


def summarize(values: Iterable[float]) -> Summary:
    """Median (the mean of the middle two for an even count) and nearest-rank p90."""
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        return Summary(0, None, None)
    mid = n // 2
    median = ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    p90 = ordered[max(0, math.ceil(0.9 * n) - 1)]
    return Summary(n, median, p90)


@dataclass
class _Facts:
    """What one (service, env)'s walk found, before grouping."""

    deployments: list[Deployment] = field(default_factory=list)  # in the period
    lead_times: list[tuple[float, float]] = field(default_factory=list)  # (started, lead)
    failures: dict[int, Failure] = field(default_factory=dict)  # by release id, in the period


def compute(
    deployments: Sequence[Deployment],
    incidents: Sequence[Incident],
    *,
    since: float,
    until: float,
) -> Report:
    """The five keys per (service, env) and in total, for deployments started in
    [since, until). Deployments before ``since`` are context only: the commits they
    delivered are not delivered again, and a remediation in the period can point at one
    (it then counts as rework, not as a failure of the period)."""
    by_pair: dict[tuple[str, str], list[Deployment]] = {}
    for d in deployments:
        by_pair.setdefault((d.service, d.env), []).append(d)
    incidents_by_release: dict[int, list[Incident]] = {}
    for incident in incidents:
        if incident.release_id is not None:
            incidents_by_release.setdefault(incident.release_id, []).append(incident)
    groups: list[Keys] = []
    everything = _Facts()
    for (service, env), pair in sorted(by_pair.items()):
        facts = _walk(sorted(pair, key=lambda d: d.revision), incidents_by_release, since, until)
        groups.append(_keys(facts, service, env, since, until))
        everything.deployments.extend(facts.deployments)
        everything.lead_times.extend(facts.lead_times)
        everything.failures.update(facts.failures)
    return Report(since, until, _keys(everything, None, None, since, until), tuple(groups))


def _walk(
    history: Sequence[Deployment],
    incidents: Mapping[int, Sequence[Incident]],
    since: float,
    until: float,
) -> _Facts:
    facts = _Facts()
    delivered: set[str] = set()
    seen_success = False
    running: Deployment | None = None  # the change deployment users have, if it is the latest
    latest_change: Deployment | None = None
    failures: dict[int, Failure] = {}
    for index, d in enumerate(history):
        inside = since <= d.started_at < until
        if inside:
            facts.deployments.append(d)
        if d.kind.rework and running is not None and running is latest_change:
            # It replaced the change users had: that change failed, and users were back on
            # a good version once a deployment from this one on succeeded.
            verb = "rolled back" if d.kind is DeployKind.ROLLBACK else "fixed"
            failures[running.release_id] = Failure(
                running.release_id,
                running.service,
                running.env,
                running.revision,
                f"{verb} by r{d.revision}",
                d.started_at,
                _restored_after(history, index),
            )
            running = None
        if d.kind.changes:
            latest_change = d
        if d.kind.changes and d.outcome != "succeeded":
            failures[d.release_id] = Failure(
                d.release_id,
                d.service,
                d.env,
                d.revision,
                "rollout rolled back" if d.outcome == "rolled_back" else "rollout failed",
                d.aborted_at if d.aborted_at is not None else d.finished_at,
                d.finished_at,
            )
        if d.outcome == "succeeded":
            if d.kind.changes:
                running = d
                first = not seen_success
                fresh = _new_commits(d, delivered, first=first)
                # A first release, or one before the period, delivered its whole history;
                # any other delivered what it was first with (the walk stopped at the
                # previous head, so everything older is marked already).
                marked = d.history if first or not inside else fresh
                delivered.update([str(c[0]) for c in marked])
                if d.commit:
                    delivered.add(d.commit)
                if inside:
                    end, started = d.finished_at, d.started_at
                    # max(0.0, x) without a call per commit (hundreds of thousands per question)
                    ages = [end - float(c[1]) for c in fresh]
                    facts.lead_times.extend([(started, a if a > 0.0 else 0.0) for a in ages])
            else:
                running = None
            seen_success = True
    for d in history:
        for incident in incidents.get(d.release_id, ()):
            failures[d.release_id] = _with_incident(failures.get(d.release_id), d, incident)
    for d in facts.deployments:
        if d.release_id in failures and d.kind.changes:
            facts.failures[d.release_id] = failures[d.release_id]
    return facts


def _new_commits(d: Deployment, delivered: set[str], *, first: bool) -> list[Sequence[Any]]:
    """The commits ``d`` is the first to deliver: its history down to the newest commit
    already delivered. The very first release known delivers only its head commit (what came
    before it predates the ledger)."""
    if not d.history:
        return []
    if first:
        return [d.history[0]]
    fresh: list[Sequence[Any]] = []
    for commit in d.history:
        if commit[0] in delivered:
            break
        fresh.append(commit)
    return fresh


def _restored_after(history: Sequence[Deployment], index: int) -> float | None:
    """When the first deployment from ``index`` on succeeded: users back on a good version."""
    for later in history[index:]:
        if later.outcome == "succeeded":
            return later.finished_at
    return None


def _with_incident(failure: Failure | None, d: Deployment, incident: Incident) -> Failure:
    """An incident against ``d``: it failed no later than the incident opened, and recovered
    no sooner than the incident was resolved."""
    name = f"incident {incident.id}"
    if failure is None:
        return Failure(
            d.release_id,
            d.service,
            d.env,
            d.revision,
            name,
            incident.opened_at,
            incident.resolved_at,
        )
    restored = (
        None
        if failure.restored_at is None or incident.resolved_at is None
        else max(failure.restored_at, incident.resolved_at)
    )
    return Failure(
        failure.release_id,
        failure.service,
        failure.env,
        failure.revision,
        f"{failure.why}; {name}",
        min(failure.failed_at, incident.opened_at),
        restored,
    )


def _keys(facts: _Facts, service: str | None, env: str | None, since: float, until: float) -> Keys:
    changes = [d for d in facts.deployments if d.kind.changes]
    failures = sorted(facts.failures.values(), key=lambda f: (f.failed_at, f.release_id))
    recoveries = [f.recovery for f in failures if f.recovery is not None]
    return Keys(
        service=service,
        env=env,
        since=since,
        until=until,
        deployments=len(facts.deployments),
        change_deployments=len(changes),
        successful_changes=sum(1 for d in changes if d.outcome == "succeeded"),
        failed_changes=len(failures),
        rework_deployments=sum(1 for d in facts.deployments if d.kind.rework),
        lead_time=summarize(lead for _, lead in facts.lead_times),
        recovery=summarize(recoveries),
        unrecovered=len(failures) - len(recoveries),
        failures=tuple(failures),
        leads=tuple(facts.lead_times),
    )


# --- per week (the dashboard's charts) ---------------------------------------------------


@dataclass(frozen=True)
class Week:
    """The keys of one week of a period, for deployments started in [start, end)."""

    start: float
    end: float
    successful_changes: int
    change_deployments: int
    failed_changes: int
    lead_time: Summary
    recovery: Summary

    @property
    def per_week(self) -> float:
        """Successful change deployments per 7 days (a clipped first week is scaled up)."""
        return self.successful_changes / max(self.end - self.start, 1.0) * WEEK

    @property
    def change_failure_rate(self) -> float | None:
        return self.failed_changes / self.change_deployments if self.change_deployments else None


def week_bounds(since: float, until: float) -> list[tuple[float, float]]:
    """Weeks ending at ``until``, oldest first; the oldest is clipped at ``since``, so the
    newest week is always whole and the weeks cover the period exactly."""
    bounds: list[tuple[float, float]] = []
    end = until
    while end > since:
        bounds.append((max(since, end - WEEK), end))
        end -= WEEK
    return bounds[::-1]


def weekly(keys: Keys, deployments: Iterable[Deployment]) -> tuple[Week, ...]:
    """``keys`` split by week: each deployment, failure and delivered commit counts in the
    week its deployment started, so the weeks add up to the period's counts. ``deployments``
    are those ``keys`` were computed from (others — before the period, other groups — are
    ignored)."""
    bounds = week_bounds(keys.since, keys.until)
    starts = [start for start, _ in bounds]

    def index(at: float) -> int | None:
        if not keys.since <= at < keys.until:
            return None
        return max(0, bisect.bisect_right(starts, at) - 1)

    n = len(bounds)
    changes, succeeded, failed = [0] * n, [0] * n, [0] * n
    leads: list[list[float]] = [[] for _ in range(n)]
    recoveries: list[list[float]] = [[] for _ in range(n)]
    started: dict[int, float] = {}
    for d in deployments:
        if keys.service is not None and d.service != keys.service:
            continue
        if keys.env is not None and d.env != keys.env:
            continue
        i = index(d.started_at)
        if i is None or not d.kind.changes:
            continue
        started[d.release_id] = d.started_at
        changes[i] += 1
        succeeded[i] += d.outcome == "succeeded"
    for f in keys.failures:
        i = index(started.get(f.release_id, -math.inf))
        if i is not None:
            failed[i] += 1
            if f.recovery is not None:
                recoveries[i].append(f.recovery)
    for at, lead in keys.leads:
        i = index(at)
        if i is not None:
            leads[i].append(lead)
    return tuple(
        Week(
            start,
            end,
            succeeded[i],
            changes[i],
            failed[i],
            summarize(leads[i]),
            summarize(recoveries[i]),
        )
        for i, (start, end) in enumerate(bounds)
    )


def kind_of(reason: str | None, rollback_of: int | None) -> DeployKind:
    """A release's kind from what created it (``application/releases.py`` writes the reason:
    ``deploy``, ``emergency: ...``, ``fix: ...``, ``retry of r3``, ``rollback to r2``)."""
    if rollback_of is not None:
        return DeployKind.ROLLBACK
    text = reason or ""
    if text.startswith("retry of"):
        return DeployKind.RETRY
    if text.startswith(("fix:", "emergency fix:")):
        return DeployKind.FIX
    return DeployKind.DEPLOY
