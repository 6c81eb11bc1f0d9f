"""Releases: numbered here, stored with their plan, updated only from the version decided on."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from conveyor.core.leases import Fence
from conveyor.core.state import RolloutStatus, StrategySpec
from conveyor.errors import Conflict, NotFound
from conveyor.store import rows
from conveyor.store.base import StoreBase
from conveyor.store.leases_repo import check_fence
from conveyor.store.records import GridRow, NewEvent, NewRelease, ReleaseRecord
from conveyor.store.tables import artifacts, releases

RELEASE_CACHE = 20_000
"""Parsed releases kept per (id, status_version) (``_by_heads``); half are dropped beyond."""


class ReleasesRepo(StoreBase):
    """Create, find and update releases; each change lands with its ledger events."""

    def create_release(
        self, new: NewRelease, *, actor: str, events: Sequence[NewEvent] = ()
    ) -> ReleaseRecord:
        """Number and store a release with its events, atomically; ids come from here only."""
        plan = new.plan
        with self._writing() as w:
            known = w.conn.execute(
                sa.select(artifacts.c.digest).where(artifacts.c.digest == plan.artifact)
            ).one_or_none()
            if known is None:
                raise NotFound(
                    f"artifact {plan.artifact} of service '{plan.service}' is not recorded",
                    hint=f"build it first: conveyor build {plan.service}",
                )
            stable_id = plan.stable.release_id if plan.stable else None
            if stable_id is not None:
                _release_row(w.conn, stable_id)
            last = w.conn.execute(
                sa.select(sa.func.max(releases.c.revision)).where(
                    (releases.c.service == plan.service) & (releases.c.env == plan.env)
                )
            ).scalar_one()
            revision = (last or 0) + 1
            inserted = w.conn.execute(
                sa.insert(releases).values(
                    service=plan.service,
                    env=plan.env,
                    revision=revision,
                    artifact_digest=plan.artifact,
                    template=plan.version,
                    config=rows.json_ready(plan.config),
                    config_version=plan.config_version,
                    instances=plan.desired,
                    strategy=rows.json_ready(plan.strategy.to_json()),
                    spec=rows.legacy_spec(plan, revision),
                    status=rows.status_json(new.status, {}),
                    plan=rows.json_ready(plan.to_json()),
                    phase=new.status.phase.value,
                    done=new.status.done,
                    stable_release_id=stable_id,
                    rollback_of=new.rollback_of,
                    reason=new.reason,
                    actor=actor,
                    created_at=w.now,
                    updated_at=w.now,
                    status_version=1,
                )
            )
            key = inserted.inserted_primary_key
            assert key is not None
            release_id = int(key[0])
            created = NewEvent(
                "release.created",
                {
                    "revision": revision,
                    "artifact": plan.artifact,
                    "template": plan.version,
                    "config_version": plan.config_version,
                    "instances": plan.desired,
                    "phase": new.status.phase.value,
                    "stable_release_id": stable_id,
                    "rollback_of": new.rollback_of,
                    "reason": new.reason,
                },
            )
            # A caller's own "release.created" (the plan: commit, config diff, exit) enriches
            # the one the store writes, so the ledger says it once.
            for extra in events:
                if extra.kind == created.kind:
                    created = NewEvent(created.kind, {**extra.details, **created.details})
            events = [e for e in events if e.kind != created.kind]
            w.append(
                [created, *events],
                actor=actor,
                service=plan.service,
                env=plan.env,
                release_id=release_id,
            )
            return rows.release(_release_row(w.conn, release_id))

    def get_release(self, release_id: int) -> ReleaseRecord:
        with self._reading() as conn:
            return rows.release(_release_row(conn, release_id))

    def release_by_revision(self, service: str, env: str, revision: int) -> ReleaseRecord:
        with self._reading() as conn:
            row = conn.execute(
                sa.select(releases).where(
                    (releases.c.service == service)
                    & (releases.c.env == env)
                    & (releases.c.revision == revision)
                )
            ).one_or_none()
        if row is None:
            raise NotFound(
                f"{service}/{env} has no release r{revision}",
                hint=f"list its releases with `conveyor history {service} {env}`",
            )
        return rows.release(row)

    def releases(self, service: str, env: str, limit: int = 50) -> list[ReleaseRecord]:
        """Newest first."""
        query = (
            sa.select(releases)
            .where((releases.c.service == service) & (releases.c.env == env))
            .order_by(releases.c.revision.desc())
            .limit(limit)
        )
        with self._reading() as conn:
            return [rows.release(row) for row in conn.execute(query)]

    def release_head(self, service: str, env: str) -> tuple[int, int] | None:
        """(id, status_version) of the newest release of (service, env): enough for a
        driver to know its copy is current without reading (and parsing) the release."""
        query = (
            sa.select(releases.c.id, releases.c.status_version)
            .where((releases.c.service == service) & (releases.c.env == env))
            .order_by(releases.c.revision.desc())
            .limit(1)
        )
        with self._reading() as conn:
            row = conn.execute(query).one_or_none()
        return None if row is None else (int(row.id), int(row.status_version))

    def service_envs(self) -> list[tuple[str, str]]:
        """Every (service, env) with a release, from the index alone."""
        query = sa.select(releases.c.service, releases.c.env).distinct()
        with self._reading() as conn:
            return sorted((str(r.service), str(r.env)) for r in conn.execute(query))

    def current_releases(self) -> dict[tuple[str, str], ReleaseRecord]:
        """The newest succeeded release of every (service, env), in one query."""
        good = (
            sa.select(
                releases.c.service, releases.c.env, sa.func.max(releases.c.revision).label("r")
            )
            .where(releases.c.phase == "succeeded")
            .group_by(releases.c.service, releases.c.env)
            .subquery()
        )
        query = sa.select(releases.c.id, releases.c.status_version).join(
            good,
            (releases.c.service == good.c.service)
            & (releases.c.env == good.c.env)
            & (releases.c.revision == good.c.r),
        )
        with self._reading(snapshot=True) as conn:
            found = self._by_heads(
                conn, [(int(r.id), int(r.status_version)) for r in conn.execute(query)]
            )
        return {(r.service, r.env): r for r in found}

    def _by_heads(
        self, conn: sa.Connection, heads: Sequence[tuple[int, int]]
    ) -> list[ReleaseRecord]:
        """Releases by (id, status_version), parsed once per version: a row never changes
        without its status_version moving on, so a parsed record of one is good for as long
        as anyone asks (``status`` of 1,500 environments parses only what changed)."""
        cache: dict[tuple[int, int], ReleaseRecord] = self.__dict__.setdefault("_release_cache", {})
        fresh: dict[int, ReleaseRecord] = {}
        missing = [rid for rid, version in heads if (rid, version) not in cache]
        for start in range(0, len(missing), 500):
            chunk = missing[start : start + 500]
            for row in conn.execute(sa.select(releases).where(releases.c.id.in_(chunk))):
                record = rows.release(row)
                cache[(record.id, record.status_version)] = fresh[record.id] = record
        if len(cache) > RELEASE_CACHE:
            for key in list(cache)[: len(cache) // 2]:
                cache.pop(key, None)
        return [
            cache.get(head) or fresh[head[0]] for head in heads if head in cache or head[0] in fresh
        ]

    def current_release(self, service: str, env: str) -> ReleaseRecord | None:
        """The newest release that finished successfully: what users should be getting."""
        query = (
            sa.select(releases)
            .where(
                (releases.c.service == service)
                & (releases.c.env == env)
                & (releases.c.phase == "succeeded")
            )
            .order_by(releases.c.revision.desc())
            .limit(1)
        )
        with self._reading() as conn:
            row = conn.execute(query).one_or_none()
        return None if row is None else rows.release(row)

    def active_releases(self) -> list[ReleaseRecord]:
        """Releases still rolling out (or rolling back), oldest first: the controller's work."""
        query = sa.select(releases).where(releases.c.done.is_(False)).order_by(releases.c.id)
        with self._reading() as conn:
            return [rows.release(row) for row in conn.execute(query)]

    def active_release(self, service: str, env: str) -> ReleaseRecord | None:
        """The newest unfinished release of (service, env), if any."""
        query = (
            sa.select(releases)
            .where(
                (releases.c.service == service)
                & (releases.c.env == env)
                & releases.c.done.is_(False)
            )
            .order_by(releases.c.revision.desc())
            .limit(1)
        )
        with self._reading() as conn:
            row = conn.execute(query).one_or_none()
        return None if row is None else rows.release(row)

    def latest_per_service_env(self, env: str | None = None) -> list[ReleaseRecord]:
        """The newest release of every (service, env) (of ``env`` only, if named), ordered
        by service then env."""
        newest = _newest(succeeded_only=False, env=env)
        query = (
            sa.select(releases.c.id, releases.c.status_version)
            .join(
                newest,
                (releases.c.service == newest.c.service)
                & (releases.c.env == newest.c.env)
                & (releases.c.revision == newest.c.rev),
            )
            .order_by(releases.c.service, releases.c.env)
        )
        with self._reading(snapshot=True) as conn:
            heads = [(int(r.id), int(r.status_version)) for r in conn.execute(query)]
            return self._by_heads(conn, heads)

    def grid(self, *, succeeded_only: bool = False) -> list[GridRow]:
        """The newest (or newest succeeded) release of every (service, env) as ``GridRow``s:
        one query, no plan parsed — the dashboard's overview at hundreds of services."""
        newest = _newest(succeeded_only)
        query = (
            sa.select(
                releases.c.id,
                releases.c.service,
                releases.c.env,
                releases.c.revision,
                releases.c.template,
                releases.c.instances,
                releases.c.created_at,
                releases.c.status,
                releases.c.strategy,
                artifacts.c.commit,
            )
            .join(
                newest,
                (releases.c.service == newest.c.service)
                & (releases.c.env == newest.c.env)
                & (releases.c.revision == newest.c.rev),
            )
            .outerjoin(artifacts, artifacts.c.digest == releases.c.artifact_digest)
            .order_by(releases.c.service, releases.c.env)
        )
        with self._reading() as conn:
            found = conn.execute(query).all()
        out = []
        for row in found:
            m = row._mapping
            status = dict(m["status"])
            status.pop("analysis", None)
            out.append(
                GridRow(
                    id=m["id"],
                    service=m["service"],
                    env=m["env"],
                    revision=m["revision"],
                    template=m["template"],
                    instances=m["instances"],
                    commit=m["commit"],
                    created_at=m["created_at"],
                    status=RolloutStatus.from_json(status),
                    strategy=StrategySpec.from_json(m["strategy"]),
                )
            )
        return out

    def update_release(
        self,
        release_id: int,
        *,
        status: RolloutStatus,
        expected_version: int,
        actor: str,
        events: Sequence[NewEvent] = (),
        analysis: Mapping[str, Any] | None = None,
        fence: Fence | None = None,
    ) -> ReleaseRecord:
        """Replace a release's status if nobody changed it since ``expected_version``.

        With a ``fence`` (the controller's writes), the release's environment lease must
        still be held at that epoch, checked in this transaction: ``Fenced`` otherwise.

        ``analysis`` replaces the stored analysis runs; None keeps them. The events are
        appended in the same transaction, defaulting to the release's service, environment
        and id, so the ledger and the status can never disagree.
        """
        with self._writing() as w:
            current = _release_row(w.conn, release_id)
            if fence is not None:
                if fence.env != current.env:
                    raise AssertionError(f"a fence for {fence.env} on a release of {current.env}")
                check_fence(w.conn, fence)
            if current.status_version != expected_version:
                raise Conflict(
                    f"release {current.service}/{current.env} r{current.revision} was changed "
                    f"by someone else (now at version {current.status_version}, "
                    f"expected {expected_version})",
                    hint="re-read the release and decide again; is another controller running?",
                )
            if analysis is None:
                analysis = dict(current.status).get("analysis") or {}
            w.conn.execute(
                sa.update(releases)
                .where(
                    (releases.c.id == release_id) & (releases.c.status_version == expected_version)
                )
                .values(
                    status=rows.status_json(status, analysis),
                    phase=status.phase.value,
                    done=status.done,
                    updated_at=w.now,
                    status_version=expected_version + 1,
                    finished_at=current.finished_at
                    if current.finished_at is not None
                    else (w.now if status.phase.terminal else None),
                )
            )
            w.append(
                events,
                actor=actor,
                service=current.service,
                env=current.env,
                release_id=release_id,
            )
            return rows.release(_release_row(w.conn, release_id))


def _release_row(conn: sa.Connection, release_id: int) -> sa.Row[Any]:
    row = conn.execute(sa.select(releases).where(releases.c.id == release_id)).one_or_none()
    if row is None:
        raise NotFound(
            f"release #{release_id} does not exist",
            hint="list releases with `conveyor history <service> <env>`",
        )
    return row


def _newest(succeeded_only: bool, env: str | None = None) -> sa.Subquery:
    """(service, env, rev): the newest revision of each pair (that succeeded, if asked; of
    ``env`` only, if named)."""
    inner = sa.select(
        releases.c.service, releases.c.env, sa.func.max(releases.c.revision).label("rev")
    )
    if succeeded_only:
        inner = inner.where(releases.c.phase == "succeeded")
    if env is not None:
        inner = inner.where(releases.c.env == env)
    return inner.group_by(releases.c.service, releases.c.env).subquery()
