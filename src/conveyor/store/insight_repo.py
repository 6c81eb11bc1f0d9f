"""Delivery insight as the Store offers it: finished deployments for DORA, and incidents.

DORA's questions cover a period of an environment ("production, the last 90 days") across
every service, so they are answered from lean rows by a covering index (``ix_releases_dora``),
never by parsing plans: a deployment is the release's own columns, the commits its
artifact recorded at build, and when its rollout was aborted (from the ledger, only for the
few that were). Incidents are rows with their transitions on the ledger, written together.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from conveyor.core.dora import Deployment, Incident, kind_of
from conveyor.errors import Conflict, NotFound
from conveyor.store import rows
from conveyor.store.base import StoreBase
from conveyor.store.records import NewEvent
from conveyor.store.tables import artifacts, events, incidents, releases

FINISHED = ("succeeded", "rolled_back", "failed")
_CHUNK = 500  # ids per IN (...): well under every engine's parameter limit
HISTORY_CACHE = 200_000
"""Artifacts whose commit history is kept parsed (``_histories``); half are dropped beyond."""


@dataclass(frozen=True)
class NewIncident:
    title: str
    source: str  # "manual", "alertmanager", "slo"
    service: str | None = None
    env: str | None = None
    fingerprint: str | None = None
    severity: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    opened_at: float | None = None  # the alert's startsAt; now when None


@dataclass(frozen=True)
class IncidentRecord:
    id: int
    title: str
    source: str
    service: str | None
    env: str | None
    fingerprint: str | None
    severity: str | None
    opened_at: float
    opened_by: str
    resolved_at: float | None
    resolved_by: str | None
    release_id: int | None
    details: Mapping[str, Any]

    @property
    def open(self) -> bool:
        return self.resolved_at is None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "source": self.source,
            "service": self.service,
            "env": self.env,
            "fingerprint": self.fingerprint,
            "severity": self.severity,
            "opened_at": self.opened_at,
            "opened_by": self.opened_by,
            "resolved_at": self.resolved_at,
            "resolved_by": self.resolved_by,
            "release_id": self.release_id,
            "details": dict(self.details),
        }

    def dora(self) -> Incident:
        return Incident(
            self.id, self.service, self.env, self.opened_at, self.resolved_at, self.release_id
        )


@dataclass(frozen=True)
class ReleaseMarker:
    """A release as /metrics marks it: the newest (``latest``) or the one users get."""

    service: str
    env: str
    revision: int
    version: str
    phase: str
    done: bool
    created_at: float
    updated_at: float
    latest: bool


class InsightRepo(StoreBase):
    """Deployments of a period, and incidents: opened, resolved, listed."""

    def deployments(
        self,
        *,
        since: float,
        until: float,
        env: str | None = None,
        service: str | None = None,
    ) -> list[Deployment]:
        """Finished releases created in [since, until), plus, per (service, env), the last
        successful change before ``since`` (context: what was already delivered)."""
        cols = (
            releases.c.id,
            releases.c.service,
            releases.c.env,
            releases.c.revision,
            releases.c.phase,
            releases.c.reason,
            releases.c.rollback_of,
            releases.c.created_at,
            releases.c.finished_at,
            releases.c.artifact_digest,
        )  # all in ix_releases_dora: read from the index, not from rows carrying plans
        where: list[sa.ColumnElement[bool]] = [releases.c.phase.in_(FINISHED)]
        if env is not None:
            where.append(releases.c.env == env)
        if service is not None:
            where.append(releases.c.service == service)
        inside = sa.select(*cols).where(
            *where, releases.c.created_at >= since, releases.c.created_at < until
        )
        last_before = (
            sa.select(
                releases.c.service,
                releases.c.env,
                sa.func.max(releases.c.revision).label("revision"),
            )
            .where(
                *where,
                releases.c.created_at < since,
                releases.c.phase == "succeeded",
                releases.c.rollback_of.is_(None),
            )
            .group_by(releases.c.service, releases.c.env)
            .subquery()
        )
        context = sa.select(*cols).join(
            last_before,
            (releases.c.service == last_before.c.service)
            & (releases.c.env == last_before.c.env)
            & (releases.c.revision == last_before.c.revision),
        )
        with self._reading(snapshot=True) as conn:
            # Plain tuples, unpacked once: a period of an organization is ~14k rows, and a
            # Row's attribute access costs more than the rest of the per-row work.
            found = [tuple(r) for r in conn.execute(inside)]
            found += [tuple(r) for r in conn.execute(context)]
            # Histories matter only where commits are delivered: successful changes.
            commits = self._histories(
                conn,
                {r[9] for r in found if r[4] == "succeeded" and r[6] is None},
            )
            # Rows that ended before 0007 recorded finished_at (none in a new store).
            unknown_end = [r[0] for r in found if r[8] is None]
            ended = _ended(conn, unknown_end) if unknown_end else {}
            aborted = _aborted(conn, [r[0] for r in found if r[4] != "succeeded"])
        found.sort(key=lambda r: (r[1], r[2], r[3]))
        out = []
        no_history: Sequence[Sequence[Any]] = ()
        for (
            rid,
            service,
            env_,
            revision,
            phase,
            reason,
            rollback_of,
            created,
            finished,
            digest,
        ) in found:
            history = commits.get(digest, no_history)
            out.append(
                Deployment(
                    rid,
                    service,
                    env_,
                    revision,
                    kind_of(reason, rollback_of),
                    phase,
                    created,
                    finished if finished is not None else ended[rid],
                    aborted.get(rid),
                    str(history[0][0]) if history else None,
                    history,
                )
            )
        return out

    def release_markers(self) -> list[ReleaseMarker]:
        """Per (service, env): the newest release, and the newest that succeeded (what users
        get), from lean columns (no plan is parsed: /metrics is scraped often)."""
        cols = (
            releases.c.service,
            releases.c.env,
            releases.c.revision,
            releases.c.template,
            releases.c.phase,
            releases.c.done,
            releases.c.created_at,
            releases.c.updated_at,
        )
        newest = (
            sa.select(
                releases.c.service, releases.c.env, sa.func.max(releases.c.revision).label("r")
            )
            .group_by(releases.c.service, releases.c.env)
            .subquery()
        )
        good = (
            sa.select(
                releases.c.service, releases.c.env, sa.func.max(releases.c.revision).label("r")
            )
            .where(releases.c.phase == "succeeded")
            .group_by(releases.c.service, releases.c.env)
            .subquery()
        )
        out: list[ReleaseMarker] = []
        with self._reading() as conn:
            for latest, pick in ((True, newest), (False, good)):
                query = sa.select(*cols).join(
                    pick,
                    (releases.c.service == pick.c.service)
                    & (releases.c.env == pick.c.env)
                    & (releases.c.revision == pick.c.r),
                )
                out.extend(
                    ReleaseMarker(
                        service=r.service,
                        env=r.env,
                        revision=r.revision,
                        version=r.template,
                        phase=r.phase,
                        done=bool(r.done),
                        created_at=r.created_at,
                        updated_at=r.updated_at,
                        latest=latest,
                    )
                    for r in conn.execute(query)
                )
        return sorted(out, key=lambda m: (m.service, m.env, not m.latest))

    # --- incidents ------------------------------------------------------------------------

    def open_incident(
        self, new: NewIncident, *, actor: str, release_id: int | None
    ) -> IncidentRecord:
        """Record an incident and its ``incident.opened`` event in one transaction."""
        with self._writing() as w:
            opened_at = new.opened_at if new.opened_at is not None else w.now
            inserted = w.conn.execute(
                sa.insert(incidents).values(
                    fingerprint=new.fingerprint,
                    service=new.service,
                    env=new.env,
                    title=new.title,
                    source=new.source,
                    severity=new.severity,
                    opened_at=opened_at,
                    opened_by=actor,
                    resolved_at=None,
                    resolved_by=None,
                    release_id=release_id,
                    details=rows.json_ready(new.details),
                )
            )
            key = inserted.inserted_primary_key
            assert key is not None
            incident_id = int(key[0])
            w.append(
                [
                    NewEvent(
                        "incident.opened",
                        {
                            "incident": incident_id,
                            "title": new.title,
                            "source": new.source,
                            "severity": new.severity,
                            "fingerprint": new.fingerprint,
                            "opened_at": opened_at,
                            **({"details": dict(new.details)} if new.details else {}),
                        },
                        service=new.service,
                        env=new.env,
                        release_id=release_id,
                    )
                ],
                actor=actor,
            )
            return _incident(_incident_row(w.conn, incident_id))

    def resolve_incident(
        self, incident_id: int, *, actor: str, resolved_at: float | None = None, note: str = ""
    ) -> IncidentRecord:
        with self._writing() as w:
            row = _incident_row(w.conn, incident_id)
            if row.resolved_at is not None:
                raise Conflict(
                    f"incident {incident_id} was resolved already",
                    hint="see `conveyor incident list --all`",
                )
            at = resolved_at if resolved_at is not None else w.now
            at = max(at, row.opened_at)
            w.conn.execute(
                sa.update(incidents)
                .where(incidents.c.id == incident_id)
                .values(resolved_at=at, resolved_by=actor)
            )
            w.append(
                [
                    NewEvent(
                        "incident.resolved",
                        {
                            "incident": incident_id,
                            "resolved_at": at,
                            "duration": round(at - row.opened_at, 3),
                            **({"note": note} if note else {}),
                        },
                        service=row.service,
                        env=row.env,
                        release_id=row.release_id,
                    )
                ],
                actor=actor,
            )
            return _incident(_incident_row(w.conn, incident_id))

    def get_incident(self, incident_id: int) -> IncidentRecord:
        with self._reading() as conn:
            return _incident(_incident_row(conn, incident_id))

    def open_incident_by_fingerprint(self, fingerprint: str) -> IncidentRecord | None:
        query = (
            sa.select(incidents)
            .where((incidents.c.fingerprint == fingerprint) & incidents.c.resolved_at.is_(None))
            .order_by(incidents.c.id.desc())
            .limit(1)
        )
        with self._reading() as conn:
            row = conn.execute(query).one_or_none()
        return None if row is None else _incident(row)

    def incidents(
        self,
        *,
        open_only: bool = False,
        since: float | None = None,
        service: str | None = None,
        env: str | None = None,
        release_ids: Iterable[int] | None = None,
        limit: int = 200,
    ) -> list[IncidentRecord]:
        """Newest first."""
        query = sa.select(incidents)
        if open_only:
            query = query.where(incidents.c.resolved_at.is_(None))
        if since is not None:
            query = query.where(incidents.c.opened_at >= since)
        if service is not None:
            query = query.where(incidents.c.service == service)
        if env is not None:
            query = query.where(incidents.c.env == env)
        with self._reading() as conn:
            if release_ids is None:
                found = conn.execute(query.order_by(incidents.c.id.desc()).limit(limit))
                return [_incident(r) for r in found]
            out: list[IncidentRecord] = []
            for chunk in _chunks(sorted(set(release_ids))):
                linked = query.where(incidents.c.release_id.in_(chunk))
                out.extend(_incident(r) for r in conn.execute(linked))
            return sorted(out, key=lambda i: -i.id)

    def incidents_against(self, found: Sequence[Deployment]) -> list[IncidentRecord]:
        """The incidents linked to any of ``found`` (a period's deployments), newest first.

        One query joined to the releases' own columns (their environments, services and the
        span of their creation), then kept to the exact set: a list of ~14k ids in ``IN``
        chunks cost 28 round trips, and binding them cost more than the rows."""
        if not found:
            return []
        ids = {d.release_id for d in found}
        envs = sorted({d.env for d in found})
        services = {d.service for d in found}
        query = (
            sa.select(incidents)
            .join(releases, releases.c.id == incidents.c.release_id)
            .where(
                releases.c.env.in_(envs),
                releases.c.created_at >= min(d.started_at for d in found),
                releases.c.created_at <= max(d.started_at for d in found),
            )
        )
        if len(services) == 1:
            query = query.where(releases.c.service == next(iter(services)))
        with self._reading() as conn:
            linked = [_incident(r) for r in conn.execute(query) if r.release_id in ids]
        return sorted(linked, key=lambda i: -i.id)

    def _histories(
        self, conn: sa.Connection, digests: set[str]
    ) -> dict[str, Sequence[Sequence[Any]]]:
        """Each artifact's recorded history, read once per process: an artifact never
        changes, so only artifacts not seen before cost a read and a JSON parse."""
        cache: dict[str, Sequence[Sequence[Any]]] = self.__dict__.setdefault("_history_cache", {})
        unseen = {d for d in digests if d not in cache}
        if unseen:
            cache.update(_commits(conn, unseen))
        if len(cache) > HISTORY_CACHE:
            for key in list(cache)[: len(cache) // 2]:
                cache.pop(key, None)
        return {d: cache[d] for d in digests if d in cache}


def _commits(conn: sa.Connection, digests: set[str]) -> dict[str, Sequence[Sequence[Any]]]:
    """Each artifact's recorded history as the build wrote it: ``(sha, time)`` pairs, newest
    first. Not converted further: the computation reads only the few new ones of each."""
    out: dict[str, Sequence[Sequence[Any]]] = {}
    for chunk in _chunks(sorted(digests)):
        query = sa.select(artifacts.c.digest, artifacts.c.metadata).where(
            artifacts.c.digest.in_(chunk)
        )
        for digest, metadata in conn.execute(query):
            listed = (metadata or {}).get("commits") or []
            well_formed = isinstance(listed, list) and all(
                isinstance(c, list) and len(c) == 2 for c in listed[:1]
            )
            # Tuples, not the parsed lists: a tuple of strings and numbers is untracked by
            # the garbage collector after one pass: kept as lists, a 90-day production
            # question left ~450k objects for every full collection to walk (~110k now).
            out[digest] = tuple(map(tuple, listed)) if well_formed else ()
    return out


def _ended(conn: sa.Connection, release_ids: Sequence[int]) -> dict[int, float]:
    """When each rollout reached its outcome: the ledger's terminal event (a release row is
    still touched after that, e.g. when the old version's instances are let go), or else
    the row's last update."""
    out: dict[int, float] = {}
    for chunk in _chunks(list(release_ids)):
        query = sa.select(releases.c.id, releases.c.updated_at).where(releases.c.id.in_(chunk))
        out.update({int(rid): float(at) for rid, at in conn.execute(query)})
    out.update(
        _first(conn, release_ids, ("release.succeeded", "release.rolled_back", "release.failed"))
    )
    return out


def _aborted(conn: sa.Connection, release_ids: Sequence[int]) -> dict[int, float]:
    """When each rollout was aborted (or failed): the failure's start for DORA."""
    return _first(conn, release_ids, ("release.aborted", "release.failed"))


def _first(
    conn: sa.Connection, release_ids: Sequence[int], kinds: tuple[str, ...]
) -> dict[int, float]:
    out: dict[int, float] = {}
    for chunk in _chunks(list(release_ids)):
        query = (
            sa.select(events.c.release_id, sa.func.min(events.c.at))
            .where(
                events.c.release_id.in_(chunk),
                events.c.kind.in_(kinds),
            )
            .group_by(events.c.release_id)
        )
        out.update({int(rid): float(at) for rid, at in conn.execute(query)})
    return out


def _chunks(items: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def _incident_row(conn: sa.Connection, incident_id: int) -> sa.Row[Any]:
    row = conn.execute(sa.select(incidents).where(incidents.c.id == incident_id)).one_or_none()
    if row is None:
        raise NotFound(
            f"incident {incident_id} does not exist",
            hint="list incidents with `conveyor incident list --all`",
        )
    return row


def _incident(row: sa.Row[Any]) -> IncidentRecord:
    m = row._mapping
    return IncidentRecord(
        id=m["id"],
        title=m["title"],
        source=m["source"],
        service=m["service"],
        env=m["env"],
        fingerprint=m["fingerprint"],
        severity=m["severity"],
        opened_at=m["opened_at"],
        opened_by=m["opened_by"],
        resolved_at=m["resolved_at"],
        resolved_by=m["resolved_by"],
        release_id=m["release_id"],
        details=dict(m["details"]),
    )
