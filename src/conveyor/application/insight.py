"""Delivery insight: DORA's keys of a period, and incidents (opened by people or alerts).

The ledger and the release rows already hold every deployment; this module asks the store
for the finished ones of a period (``store/insight_repo.py``) and the incidents linked to
them, and lets ``core.dora`` compute. Incidents name the release that was running when they
started (``running_at``), which is how an incident counts against a deployment.

The Alertmanager receiver speaks Alertmanager's webhook format (version 4): one POST per
notification group, each alert with ``status`` firing/resolved, ``labels``,
``annotations``, ``startsAt``, ``endsAt`` and ``fingerprint``. A firing alert opens an
incident keyed by its fingerprint (once: Alertmanager repeats notifications), a resolved
one resolves it. The service and environment come from the labels ``service`` and ``env``
(or ``environment``), the names Conveyor's own generated rules use.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from conveyor.application.caller import Caller
from conveyor.core.dora import Report, Week, compute, weekly
from conveyor.core.state import Phase
from conveyor.errors import UsageError
from conveyor.store.insight_repo import IncidentRecord, NewIncident
from conveyor.store.records import ReleaseRecord
from conveyor.store.repository import Store

MAX_PERIOD = 400 * 86400.0
"""The longest period one DORA question may cover."""
MAX_ALERTS = 500
"""Alerts per Alertmanager notification (its default group limit is unbounded; ours is not)."""
MAX_TEXT = 2000
_SKIPPED = (Phase.PENDING_APPROVAL, Phase.CANCELLED, Phase.REJECTED)


@dataclass(frozen=True)
class WebhookResult:
    opened: list[IncidentRecord]
    resolved: list[IncidentRecord]
    ignored: int  # repeats of what is already known, or alerts naming nothing we run

    def to_json(self) -> dict[str, Any]:
        return {
            "opened": [i.id for i in self.opened],
            "resolved": [i.id for i in self.resolved],
            "ignored": self.ignored,
        }


@dataclass
class Insight:
    store: Store
    clock: Callable[[], float]

    def dora(self, *, since: float, until: float, env: str | None, service: str | None) -> Report:
        return self.trends(since=since, until=until, env=env, service=service, weeks=False)[0]

    def trends(
        self,
        *,
        since: float,
        until: float,
        env: str | None,
        service: str | None,
        weeks: bool = True,
    ) -> tuple[Report, tuple[Week, ...]]:
        """The report and, with ``weeks``, its total split by week (``core.dora.weekly``),
        from the same two reads the API's question makes: the dashboard's charts cost one
        pass over rows already in memory."""
        if not 0 < until - since <= MAX_PERIOD:
            raise UsageError(
                f"a DORA period must be longer than nothing and at most {MAX_PERIOD / 86400:g} "
                "days",
                hint="ask with --since 90d (or a shorter period)",
            )
        deployments = self.store.deployments(since=since, until=until, env=env, service=service)
        incidents = self.store.incidents_against(deployments)
        report = compute(deployments, [i.dora() for i in incidents], since=since, until=until)
        return report, weekly(report.total, deployments) if weeks else ()

    # --- incidents --------------------------------------------------------------------

    def open(self, caller: Caller, new: NewIncident) -> IncidentRecord:
        if new.fingerprint is not None:
            known = self.store.open_incident_by_fingerprint(new.fingerprint)
            if known is not None:
                return known
        at = new.opened_at if new.opened_at is not None else self.clock()
        running = (
            self.running_at(new.service, new.env, at)
            if new.service is not None and new.env is not None
            else None
        )
        return self.store.open_incident(
            new, actor=caller.actor, release_id=running.id if running else None
        )

    def resolve(
        self, caller: Caller, incident_id: int, *, at: float | None = None, note: str = ""
    ) -> IncidentRecord:
        return self.store.resolve_incident(
            incident_id, actor=caller.actor, resolved_at=at, note=note
        )

    def running_at(self, service: str, env: str, at: float) -> ReleaseRecord | None:
        """The release users were getting at ``at``: one rolling out then, or else the
        newest that had succeeded by then."""
        for release in self.store.releases(service, env, limit=100):
            if release.phase in _SKIPPED or release.created_at > at:
                continue
            if not release.done or release.updated_at > at:
                return release  # rolling out at that moment: it is what changed
            if release.phase == Phase.SUCCEEDED:
                return release
        return None

    def alertmanager(self, caller: Caller, body: Mapping[str, Any]) -> WebhookResult:
        """Open and resolve incidents from one Alertmanager notification."""
        alerts = body.get("alerts")
        if not isinstance(alerts, list) or len(alerts) > MAX_ALERTS:
            raise UsageError(
                f"'alerts' must be a list of at most {MAX_ALERTS} alerts (Alertmanager's "
                "webhook format, version 4)",
                hint="point an Alertmanager webhook_config at /api/v1/alertmanager",
            )
        common_labels = body.get("commonLabels")
        common: Mapping[str, Any] = common_labels if isinstance(common_labels, dict) else {}
        opened: list[IncidentRecord] = []
        resolved: list[IncidentRecord] = []
        ignored = 0
        for raw in alerts:
            alert = _alert(raw, common)
            known = self.store.open_incident_by_fingerprint(alert.fingerprint)
            if alert.firing:
                if known is not None:
                    ignored += 1
                    continue
                opened.append(
                    self.open(
                        caller,
                        NewIncident(
                            title=alert.title,
                            source="alertmanager",
                            service=alert.service,
                            env=alert.env,
                            fingerprint=alert.fingerprint,
                            severity=alert.severity,
                            details={"labels": alert.labels},
                            opened_at=min(alert.starts_at or self.clock(), self.clock()),
                        ),
                    )
                )
            elif known is None:
                ignored += 1
            else:
                resolved.append(
                    self.resolve(
                        caller,
                        known.id,
                        at=min(alert.ends_at or self.clock(), self.clock()),
                        note="resolved by Alertmanager",
                    )
                )
        return WebhookResult(opened, resolved, ignored)


@dataclass(frozen=True)
class _Alert:
    firing: bool
    fingerprint: str
    title: str
    service: str | None
    env: str | None
    severity: str | None
    labels: dict[str, str]
    starts_at: float | None
    ends_at: float | None


def _alert(raw: object, common: Mapping[str, Any]) -> _Alert:
    hint = "send Alertmanager's webhook JSON (version 4) unchanged"
    if not isinstance(raw, dict):
        raise UsageError("each alert must be a JSON object", hint=hint)
    status = raw.get("status")
    if status not in ("firing", "resolved"):
        raise UsageError(f"an alert's 'status' is firing or resolved, got {status!r}", hint=hint)
    labels = raw.get("labels")
    if (
        not isinstance(labels, dict)
        or not all(
            isinstance(k, str) and isinstance(v, str) and len(k) + len(v) < MAX_TEXT
            for k, v in labels.items()
        )
        or len(labels) > 100
    ):
        raise UsageError("an alert's 'labels' must be an object of text values", hint=hint)
    fingerprint = raw.get("fingerprint")
    if not isinstance(fingerprint, str) or not 0 < len(fingerprint) <= 200:
        raise UsageError("an alert needs its 'fingerprint' (text)", hint=hint)
    given = raw.get("annotations")
    annotations: Mapping[str, Any] = given if isinstance(given, dict) else {}
    name = labels.get("alertname") or common.get("alertname") or "alert"
    summary = annotations.get("summary") if isinstance(annotations.get("summary"), str) else None
    return _Alert(
        firing=status == "firing",
        fingerprint=fingerprint,
        title=(f"{name}: {summary}" if summary else str(name))[:MAX_TEXT],
        service=labels.get("service"),
        env=labels.get("env") or labels.get("environment"),
        severity=labels.get("severity"),
        labels=dict(labels),
        starts_at=_time(raw.get("startsAt")),
        ends_at=_time(raw.get("endsAt")),
    )


def _time(value: object) -> float | None:
    """RFC 3339 as Alertmanager writes it; its "zero time" (0001-01-01) means unknown."""
    if not isinstance(value, str) or not value or value.startswith("0001-"):
        return None
    text = value.replace("Z", "+00:00")
    if "." in text:  # Go writes nanoseconds; Python reads at most microseconds
        head, _, rest = text.partition(".")
        digits = "".join(c for c in rest if c.isdigit())
        zone = rest[len(digits) :]
        text = f"{head}.{digits[:6]}{zone}"
    try:
        return dt.datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise UsageError(f"{value[:60]!r} is not an RFC 3339 time") from None
