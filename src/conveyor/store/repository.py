"""``Store``: every read and write of Conveyor's state, each in one short transaction.

Design choices that matter to callers:

* Every write transaction first locks the ledger head, so writes are totally ordered and the
  events a write appends land in the *same* transaction as the state change they describe.
  A release's status can therefore never move without its ledger entry, and a controller
  killed mid-write leaves neither.
* Release updates are optimistic: the caller names the ``status_version`` it decided from,
  and a stale decision is refused with ``Conflict`` instead of overwriting a newer one.
* Addresses are allocated once per (service, env) and kept forever, so clients and other
  services can rely on a port across any number of releases and rollbacks.
* The store is synchronous and thread-safe (the engine pools connections; ``Store`` holds no
  other mutable state), so one instance can serve the server's threads and CLI processes
  can open their own against the same database.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

from conveyor.errors import Conflict, NotFound, Refused, StoreError
from conveyor.store import ledger, rows
from conveyor.store.engine import create_engine, migrate, redact, write_transaction
from conveyor.store.records import (
    AddressRecord,
    ArtifactRecord,
    EventRecord,
    LedgerCheck,
    NewEvent,
    NewRelease,
    ReleaseRecord,
)
from conveyor.store.tables import addresses, artifacts, events, ledger_head, releases

LOOPBACK = "127.0.0.1"
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_PREFIX = re.compile(r"[0-9a-f]{7,64}")
_VERIFY_PAGE = 1000
_PORT_ATTEMPTS = 50


class Store:
    """The state database. Open with ``Store.open(url)``; close when done."""

    def __init__(self, engine: sa.Engine, *, clock: Callable[[], float] = time.time) -> None:
        self._engine = engine
        self._clock = clock

    @classmethod
    def open(cls, url: str, *, clock: Callable[[], float] = time.time) -> Store:
        """Connect and migrate to the newest schema (a no-op when already there)."""
        engine = create_engine(url)
        try:
            migrate(engine)
        except StoreError:
            engine.dispose()
            raise
        except sa.exc.SQLAlchemyError as exc:
            engine.dispose()
            raise StoreError(
                f"cannot open the state database {redact(url)}: {_reason(exc)}",
                hint="check CONVEYOR_DATABASE_URL and that the database server is reachable",
            ) from exc
        return cls(engine, clock=clock)

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # --- transactions ---------------------------------------------------------------

    @contextmanager
    def _reading(self, *, snapshot: bool = False) -> Iterator[sa.Connection]:
        with _translated(), self._engine.connect() as conn:
            if snapshot and conn.dialect.name == "postgresql":
                conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                yield conn

    @contextmanager
    def _writing(self) -> Iterator[rows.Writer]:
        with _translated(), write_transaction(self._engine) as conn:
            head = conn.execute(
                sa.select(ledger_head.c.seq, ledger_head.c.hash)
                .where(ledger_head.c.id == 1)
                .with_for_update()
            ).one()
            writer = rows.Writer(conn, self._clock(), head.seq, head.hash)
            yield writer
            writer.finish()

    # --- artifacts ------------------------------------------------------------------

    def record_artifact(self, artifact: ArtifactRecord, *, actor: str) -> ArtifactRecord:
        """Remember a built artifact; an existing digest is returned as stored, never replaced."""
        if not _DIGEST.fullmatch(artifact.digest):
            raise Refused(
                f"'{artifact.digest}' is not an artifact digest",
                hint="artifact digests are 'sha256:' followed by 64 lowercase hex characters",
            )
        with self._writing() as w:
            existing = w.conn.execute(
                sa.select(artifacts).where(artifacts.c.digest == artifact.digest)
            ).one_or_none()
            if existing is not None:
                return rows.artifact(existing)
            w.conn.execute(
                sa.insert(artifacts).values(
                    digest=artifact.digest,
                    service=artifact.service,
                    commit=artifact.commit,
                    branch=artifact.branch,
                    dirty=artifact.dirty,
                    created_at=float(artifact.created_at),
                    size=artifact.size,
                    files=artifact.files,
                    build_command=artifact.build_command,
                    outputs=list(artifact.outputs),
                    metadata=rows.json_ready(artifact.metadata),
                    actor=actor,
                )
            )
            details = {
                "digest": artifact.digest,
                "commit": artifact.commit,
                "branch": artifact.branch,
                "dirty": artifact.dirty,
                "size": artifact.size,
                "files": artifact.files,
            }
            w.append([NewEvent("artifact.built", details, service=artifact.service)], actor=actor)
            stored = w.conn.execute(
                sa.select(artifacts).where(artifacts.c.digest == artifact.digest)
            ).one()
            return rows.artifact(stored)

    def get_artifact(self, digest_or_prefix: str) -> ArtifactRecord:
        """Look an artifact up by full digest or an unambiguous prefix of >= 7 hex characters."""
        wanted = digest_or_prefix.strip().lower().removeprefix("sha256:")
        if not _PREFIX.fullmatch(wanted):
            raise NotFound(
                f"'{digest_or_prefix}' is not an artifact digest",
                hint="give sha256:<hex> or at least 7 hex characters of the digest",
            )
        with self._reading() as conn:
            found = conn.execute(
                sa.select(artifacts)
                .where(artifacts.c.digest.startswith(f"sha256:{wanted}", autoescape=True))
                .order_by(artifacts.c.digest)
                .limit(5)
            ).all()
        if not found:
            raise NotFound(
                f"no artifact matches '{digest_or_prefix}'",
                hint="list recorded artifacts with `conveyor artifacts`, or build the service",
            )
        if len(found) > 1:
            shown = ", ".join(row.digest[:19] for row in found)
            raise Conflict(
                f"'{digest_or_prefix}' is ambiguous: it matches {shown}",
                hint="give more characters of the digest",
            )
        return rows.artifact(found[0])

    def list_artifacts(self, service: str | None = None, limit: int = 50) -> list[ArtifactRecord]:
        """Newest first."""
        query = sa.select(artifacts)
        if service is not None:
            query = query.where(artifacts.c.service == service)
        query = query.order_by(artifacts.c.created_at.desc(), artifacts.c.digest).limit(limit)
        with self._reading() as conn:
            return [rows.artifact(row) for row in conn.execute(query)]

    # --- addresses ------------------------------------------------------------------

    def address(
        self,
        service: str,
        env: str,
        *,
        pinned_port: int | None = None,
        allocate: Callable[[], int],
    ) -> AddressRecord:
        """The stable address of (service, env), allocated on first use and then kept.

        ``allocate`` returns a candidate free port (e.g. by binding port 0); it is asked again
        if the candidate is already recorded for another address. A ``pinned_port`` that
        differs from the stored one wins, because the user asked for it, and is logged.
        """
        where = (addresses.c.service == service) & (addresses.c.env == env)
        with self._writing() as w:
            existing = w.conn.execute(sa.select(addresses).where(where)).one_or_none()
            if existing is not None and pinned_port in (None, existing.port):
                return rows.address(existing)
            taken = _ports_taken(w.conn, exclude=(service, env))
            if pinned_port is not None:
                _check_pinnable(w.conn, pinned_port, service, env)
                taken.add(pinned_port)
            if existing is not None:
                assert pinned_port is not None
                preview = existing.preview_port
                if preview == pinned_port:
                    preview = _allocate(allocate, taken, service, env)
                w.conn.execute(
                    sa.update(addresses)
                    .where(where)
                    .values(port=pinned_port, preview_port=preview, pinned=True, updated_at=w.now)
                )
                details = {"port": pinned_port, "previous_port": existing.port}
                details["preview_port"] = preview
                w.append(
                    [NewEvent("address.pinned", details, service=service, env=env)],
                    actor="conveyor",
                )
            else:
                port = (
                    pinned_port
                    if pinned_port is not None
                    else _allocate(allocate, taken, service, env)
                )
                taken.add(port)
                preview = _allocate(allocate, taken, service, env)
                w.conn.execute(
                    sa.insert(addresses).values(
                        service=service,
                        env=env,
                        host=LOOPBACK,
                        port=port,
                        preview_port=preview,
                        pinned=pinned_port is not None,
                        created_at=w.now,
                        updated_at=w.now,
                    )
                )
                details = {"host": LOOPBACK, "port": port, "preview_port": preview}
                w.append(
                    [NewEvent("address.allocated", details, service=service, env=env)],
                    actor="conveyor",
                )
            return rows.address(w.conn.execute(sa.select(addresses).where(where)).one())

    def addresses(self) -> list[AddressRecord]:
        with self._reading() as conn:
            query = sa.select(addresses).order_by(addresses.c.service, addresses.c.env)
            return [rows.address(row) for row in conn.execute(query)]

    # --- releases -------------------------------------------------------------------

    def create_release(
        self, new: NewRelease, *, actor: str, events: Sequence[NewEvent] = ()
    ) -> ReleaseRecord:
        """Store a release as the next revision of (service, env), with its events, atomically."""
        with self._writing() as w:
            known = w.conn.execute(
                sa.select(artifacts.c.digest).where(artifacts.c.digest == new.artifact_digest)
            ).one_or_none()
            if known is None:
                raise NotFound(
                    f"artifact {new.artifact_digest} of service '{new.service}' is not recorded",
                    hint=f"build it first: conveyor build {new.service}",
                )
            if new.stable_release_id is not None:
                _release_row(w.conn, new.stable_release_id)
            last = w.conn.execute(
                sa.select(sa.func.max(releases.c.revision)).where(
                    (releases.c.service == new.service) & (releases.c.env == new.env)
                )
            ).scalar_one()
            revision = (last or 0) + 1
            inserted = w.conn.execute(
                sa.insert(releases).values(
                    service=new.service,
                    env=new.env,
                    revision=revision,
                    artifact_digest=new.artifact_digest,
                    template=new.template,
                    config=rows.json_ready(new.config),
                    config_version=new.config_version,
                    instances=new.instances,
                    strategy=rows.json_ready(new.strategy),
                    spec=rows.json_ready(new.spec),
                    status=rows.json_ready(new.status),
                    phase=new.phase,
                    done=False,
                    stable_release_id=new.stable_release_id,
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
                    "artifact": new.artifact_digest,
                    "template": new.template,
                    "config_version": new.config_version,
                    "instances": new.instances,
                    "phase": new.phase,
                    "stable_release_id": new.stable_release_id,
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
                service=new.service,
                env=new.env,
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

    def latest_per_service_env(self) -> list[ReleaseRecord]:
        """The newest release of every (service, env), ordered by service then env."""
        newest = (
            sa.select(
                releases.c.service, releases.c.env, sa.func.max(releases.c.revision).label("rev")
            )
            .group_by(releases.c.service, releases.c.env)
            .subquery()
        )
        query = (
            sa.select(releases)
            .join(
                newest,
                (releases.c.service == newest.c.service)
                & (releases.c.env == newest.c.env)
                & (releases.c.revision == newest.c.rev),
            )
            .order_by(releases.c.service, releases.c.env)
        )
        with self._reading() as conn:
            return [rows.release(row) for row in conn.execute(query)]

    def update_release(
        self,
        release_id: int,
        *,
        status: Mapping[str, Any],
        phase: str,
        done: bool,
        expected_version: int,
        actor: str,
        events: Sequence[NewEvent] = (),
    ) -> ReleaseRecord:
        """Replace a release's status if nobody changed it since ``expected_version``.

        The events are appended in the same transaction, defaulting to the release's service,
        environment and id, so the ledger and the status can never disagree.
        """
        with self._writing() as w:
            current = _release_row(w.conn, release_id)
            if current.status_version != expected_version:
                raise Conflict(
                    f"release {current.service}/{current.env} r{current.revision} was changed "
                    f"by someone else (now at version {current.status_version}, "
                    f"expected {expected_version})",
                    hint="re-read the release and decide again; is another controller running?",
                )
            w.conn.execute(
                sa.update(releases)
                .where(
                    (releases.c.id == release_id) & (releases.c.status_version == expected_version)
                )
                .values(
                    status=rows.json_ready(status),
                    phase=phase,
                    done=done,
                    updated_at=w.now,
                    status_version=expected_version + 1,
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

    # --- ledger ---------------------------------------------------------------------

    def append_events(self, events: Sequence[NewEvent], *, actor: str) -> list[EventRecord]:
        """Append free-standing events (approvals, flag flips, overrides) to the chain."""
        if not events:
            return []
        with self._writing() as w:
            return w.append(events, actor=actor)

    def events(
        self,
        *,
        release_id: int | None = None,
        service: str | None = None,
        env: str | None = None,
        after_seq: int = 0,
        limit: int = 1000,
    ) -> list[EventRecord]:
        """Events in ledger order; ``after_seq`` lets a follower resume where it stopped."""
        query = sa.select(events).where(events.c.seq > after_seq)
        if release_id is not None:
            query = query.where(events.c.release_id == release_id)
        if service is not None:
            query = query.where(events.c.service == service)
        if env is not None:
            query = query.where(events.c.env == env)
        query = query.order_by(events.c.seq).limit(limit)
        with self._reading() as conn:
            return [rows.event(row) for row in conn.execute(query)]

    def verify_ledger(self) -> LedgerCheck:
        """Re-hash the whole chain from genesis in one consistent snapshot."""
        with self._reading(snapshot=True) as conn:
            head = conn.execute(
                sa.select(ledger_head.c.seq, ledger_head.c.hash).where(ledger_head.c.id == 1)
            ).one()
            return ledger.check_chain(_all_events(conn), (head.seq, head.hash))


# --- helpers --------------------------------------------------------------------------


@contextmanager
def _translated() -> Iterator[None]:
    """Turn a database outage into a StoreError the CLI can print; bugs still raise."""
    try:
        yield
    except sa.exc.OperationalError as exc:
        raise StoreError(
            f"the state database failed: {_reason(exc)}",
            hint="check that the database is reachable (CONVEYOR_DATABASE_URL) and retry",
        ) from exc


def _reason(exc: sa.exc.SQLAlchemyError) -> str:
    original = getattr(exc, "orig", None) or exc
    return str(original).strip().splitlines()[0] if str(original).strip() else type(exc).__name__


def _release_row(conn: sa.Connection, release_id: int) -> sa.Row[Any]:
    row = conn.execute(sa.select(releases).where(releases.c.id == release_id)).one_or_none()
    if row is None:
        raise NotFound(
            f"release #{release_id} does not exist",
            hint="list releases with `conveyor history <service> <env>`",
        )
    return row


def _all_events(conn: sa.Connection) -> Iterator[EventRecord]:
    """Every event in seq order, fetched page by page so a long ledger stays in bounded memory."""
    after = 0
    while True:
        page = conn.execute(
            sa.select(events).where(events.c.seq > after).order_by(events.c.seq).limit(_VERIFY_PAGE)
        ).all()
        for row in page:
            yield rows.event(row)
        if len(page) < _VERIFY_PAGE:
            return
        after = page[-1].seq


def _ports_taken(conn: sa.Connection, *, exclude: tuple[str, str]) -> set[int]:
    taken: set[int] = set()
    for row in conn.execute(sa.select(addresses)):
        if (row.service, row.env) != exclude:
            taken.update((row.port, row.preview_port))
    return taken


def _check_pinnable(conn: sa.Connection, port: int, service: str, env: str) -> None:
    if not 0 < port < 65536:
        raise Refused(
            f"port {port} pinned for {service}/{env} is not a TCP port",
            hint="pin a port between 1 and 65535 in conveyor.yaml",
        )
    for row in conn.execute(sa.select(addresses)):
        if (row.service, row.env) != (service, env) and port in (row.port, row.preview_port):
            raise Conflict(
                f"port {port} pinned for {service}/{env} is already the address of "
                f"{row.service}/{row.env}",
                hint="pin a different port in conveyor.yaml, or unpin one of them",
            )


def _allocate(allocate: Callable[[], int], taken: set[int], service: str, env: str) -> int:
    for _ in range(_PORT_ATTEMPTS):
        port = allocate()
        if 0 < port < 65536 and port not in taken:
            taken.add(port)
            return port
    raise Conflict(
        f"could not find a free port for {service}/{env} after {_PORT_ATTEMPTS} attempts",
        hint="free some local ports, or pin one for this service in conveyor.yaml",
    )
