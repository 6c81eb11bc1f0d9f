"""Keeping the ledger honest while the server runs: signed checkpoints, and verification.

The hash chain shows a row edited by hand, but whoever can write the database can also
recompute every later hash and the head. So the server signs *checkpoints* of the chain's
head -- "link ``seq`` had hash ``hash`` at ``at``" -- with its key (through the ``Notary``,
which knows where the key lives), and verification checks every checkpoint against the
chain: a recomputed chain breaks at the first checkpoint after the edit.

When a checkpoint is signed (``checkpoint_due``, pure): at start; right after any event in
``SECURITY_EVENTS`` (the moments an attacker would most like to rewrite); after ``every``
events; and every ``interval`` seconds, when the head moved. The store tells the ledger
what it appended (``Store.on_append``); the ledger only notes it there, and a background
task signs within ``poll`` seconds, so no write ever waits for the key.

The key signs only what the server has just verified: each checkpoint is preceded by a
verification from the previous checkpoint to the head. A chain found broken is never
signed over -- that would launder the rewrite into the next "verification from the last
checkpoint".

Start-up verifies from the newest checkpoint, not the whole chain (a standby must take over
in well under the seconds a million events take), in the background, and **the server runs
whatever it finds**. A broken ledger is reported loudly -- an ERROR in the log, a
``ledger.broken`` event, ``GET /api/v1/ledger/verify`` -- and checkpoints stop until the
chain verifies from its last checkpoint again; deploys and rollbacks go on. Refusing to
start (or to deploy) would hand anyone who can edit one row a switch that turns off the
control plane, rollbacks included; and appending to a broken chain hides nothing: the break
stays where it is and is named by every later verification. See docs/ledger.md.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from conveyor.application.notary import Notary
from conveyor.errors import ConveyorError
from conveyor.store.ledger import (
    CHECKPOINT_PAYLOAD_TYPE,
    Opener,
    checkpoint_statement,
    read_checkpoint,
)
from conveyor.store.records import (
    Checkpoint,
    CheckpointRecord,
    EventRecord,
    LedgerCheck,
    NewEvent,
)
from conveyor.store.repository import Store

log = logging.getLogger("conveyor.ledger")

SECURITY_EVENTS: frozenset[str] = frozenset(
    {
        "keys.rotated",  # who can sign changed: pin the history signed under the old key
        "artifact.refused",  # the server said no to bytes: the record an attacker would erase
        "release.refused",  # ... and to a release whose requirements were not met
        "artifact.attested",  # gate evidence: what unlocks promotion to the next environment
        "config.invalid",  # what the server will run broke, or was tampered with
        "config.valid",  # ... and what it runs again from here on
        "token.created",  # who may call the server changed
        "token.revoked",
        # Approvals and overrides join here as they are added: one set, one place.
    }
)
"""Event kinds after which the server signs a checkpoint at once (within ``poll``)."""

BROKEN = "ledger.broken"


@dataclass(frozen=True)
class CheckpointPolicy:
    """How often the server vouches for the head: the window an attacker could rewrite
    unnoticed is at most ``interval`` seconds or ``every`` events (and zero after a
    security event, give or take ``poll``)."""

    interval: float = 60.0
    every: int = 1000
    poll: float = 0.5


def checkpoint_due(
    policy: CheckpointPolicy,
    *,
    covered: int,
    seen: int,
    urgent: tuple[str, int] | None,
    since: float,
) -> str | None:
    """Why a checkpoint is due now, or None.

    ``covered`` is the head seq the last attempt looked at, ``seen`` the newest seq this
    server appended, ``urgent`` the newest security event (kind, seq), ``since`` the
    seconds since the last attempt. The interval fires even when nothing was seen: other
    servers sharing the database append too, and the attempt itself finds out whether the
    head moved.
    """
    if urgent is not None and urgent[1] > covered:
        return urgent[0]
    if seen - covered >= policy.every:
        return "events"
    if since >= policy.interval:
        return "interval"
    return None


@dataclass(frozen=True)
class LedgerReport:
    """The answer of ``GET /api/v1/ledger/verify``."""

    check: LedgerCheck

    def to_json(self) -> dict[str, Any]:
        c = self.check
        anchor = c.checkpoint
        return {
            "ok": c.ok,
            "full": c.full,
            "checked": c.checked,
            "first_bad_seq": c.first_bad_seq,
            "fault": c.fault,
            "problem": c.problem,
            "head": c.head[0] if c.head is not None else None,
            "checkpoint": (
                None if anchor is None else {"seq": anchor.seq, "at": anchor.at, "key": anchor.key}
            ),
        }


class Ledger:
    """The server's side of the ledger: what it verifies, what it signs, what it reports."""

    def __init__(
        self,
        store: Store,
        notary: Notary,
        clock: Callable[[], float],
        *,
        policy: CheckpointPolicy | None = None,
        actor: str = "conveyor",
    ) -> None:
        self.store = store
        self.notary = notary
        self.clock = clock
        self.policy = policy or CheckpointPolicy()
        self.actor = actor
        self._lock = threading.Lock()  # one verification-and-signature at a time
        self._full = threading.Lock()  # one full pass at a time, whoever asks
        self._flags = threading.Lock()  # what observe() notes; never held for I/O
        self._started = False
        self._covered = 0
        self._seen = 0
        self._urgent: tuple[str, int] | None = None
        self._attempted = time.monotonic()
        self._reported: set[tuple[str | None, int | None]] = set()
        self._ignored_witness: set[int] = set()

    # --- what the store tells us ----------------------------------------------------------

    def observe(self, events: Sequence[EventRecord]) -> None:
        """``Store.on_append`` observer: note what was appended; sign nothing here."""
        with self._flags:
            for event in events:
                self._seen = max(self._seen, event.seq)
                if event.kind in SECURITY_EVENTS:
                    self._urgent = (event.kind, event.seq)

    def due(self) -> str | None:
        with self._flags:
            if not self._started:
                return None
            return checkpoint_due(
                self.policy,
                covered=self._covered,
                seen=self._seen,
                urgent=self._urgent,
                since=time.monotonic() - self._attempted,
            )

    # --- verifying and signing -------------------------------------------------------------

    def verify(self, *, full: bool) -> LedgerCheck:
        """Verify the whole chain (``full``) or from the newest checkpoint; report a break."""
        if full:
            with self._full:
                check = self._verify(full=True)
        else:
            check = self._verify(full=False)
        if not check.ok:
            self._report(check)
        return check

    def report(self, *, full: bool) -> LedgerReport:
        return LedgerReport(self.verify(full=full))

    def start(self) -> LedgerCheck:
        """What the server does once at start: verify from the newest checkpoint, sign."""
        began = time.monotonic()
        try:
            check = self.checkpoint("start")
        finally:  # even when the store is down now: the interval tries again later
            with self._flags:
                self._started = True
        took = time.monotonic() - began
        if check.ok:
            anchor = check.checkpoint
            log.info(
                "ledger verified from %s to seq %s (%d events) in %.2f s",
                f"checkpoint seq {anchor.seq}" if anchor else "genesis",
                check.head[0] if check.head else 0,
                check.checked,
                took,
            )
        return check

    def checkpoint(self, reason: str) -> LedgerCheck:
        """Verify from the newest checkpoint to the head and, if that holds and the head
        moved, sign a checkpoint of it. Returns the verification it rests on."""
        with self._lock:
            check = self._verify(full=False)
            head = check.head[0] if check.head is not None else 0
            with self._flags:
                self._attempted = time.monotonic()
                self._covered = max(self._covered, head)
                if self._urgent is not None and self._urgent[1] <= head:
                    self._urgent = None
            if not check.ok:
                self._report(check)
                return check
            if check.head is None or head == 0:
                return check
            if check.checkpoint is not None and check.checkpoint.seq >= head:
                return check  # the head has not moved since it was last vouched for
            self._sign(check.head, reason)
            return check

    # --- the background task --------------------------------------------------------------

    async def run(self) -> None:
        """Verify at start, then sign checkpoints whenever one is due, until cancelled."""
        await asyncio.to_thread(self._guarded, self.start)
        while True:
            await asyncio.sleep(self.policy.poll)
            reason = self.due()
            if reason is not None:
                await asyncio.to_thread(self._guarded, functools.partial(self.checkpoint, reason))

    def wait_idle(self) -> None:
        """Block until no verification or signature is in flight (before the store closes:
        cancelling the task does not stop the thread it runs in)."""
        with self._lock:
            pass

    # --- internals --------------------------------------------------------------------------

    def _guarded(self, attempt: Callable[[], LedgerCheck]) -> None:
        """Run one attempt of the background task; what fails is logged and tried again later.

        A background task that died would stop checkpoints silently, so even a bug is
        caught here -- and logged with its traceback, not swallowed.
        """
        try:
            attempt()
        except ConveyorError as error:  # the store or the key is unavailable: try again later
            log.warning("ledger checkpoint: %s (%s)", error.message, error.hint or "retrying")
        except Exception:
            log.exception("ledger checkpoint failed (a bug in Conveyor)")

    def _verify(self, *, full: bool) -> LedgerCheck:
        opener = self._opener()
        return self.store.verify_ledger(
            opener=opener, from_checkpoint=not full, known=self._witness(opener)
        )

    def _opener(self) -> Opener:
        open_ = self.notary.opener(CHECKPOINT_PAYLOAD_TYPE)

        def opener(envelope: Mapping[str, Any]) -> Checkpoint:
            return read_checkpoint(*open_(envelope))

        return opener

    def _witness(self, opener: Opener) -> list[Checkpoint]:
        """The last checkpoint this server signed, if it is about this ledger.

        A checkpoint can only vouch for a ledger that existed when it was signed: when the
        first event is newer than the witness (or there is none), the database was replaced
        on purpose -- a fresh state.db, another URL -- and the witness is not about it.
        """
        envelope = self.notary.last()
        if envelope is None:
            return []
        try:
            claim = opener(envelope)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            log.warning("the ledger witness does not verify (%s); ignoring it", exc)
            return []
        first = self.store.events(limit=1)
        if not first or first[0].at > claim.at:
            if claim.seq not in self._ignored_witness:
                self._ignored_witness.add(claim.seq)
                log.warning(
                    "the ledger witness (seq %d) is older than this ledger: the database was "
                    "replaced; the witness is not about it",
                    claim.seq,
                )
            return []
        return [claim]

    def _sign(self, head: tuple[int, str], reason: str) -> CheckpointRecord:
        seq, hash_ = head
        at = self.clock()
        envelope = self.notary.sign(CHECKPOINT_PAYLOAD_TYPE, checkpoint_statement(seq, hash_, at))
        # Open what was just signed, as a verifier will: a key that is not trusted fails here.
        signed = self._opener()(envelope)
        record = self.store.record_checkpoint(signed, envelope, reason=reason)
        try:
            self.notary.remember(envelope)
        except OSError as exc:
            log.warning("cannot keep the ledger witness (%s): deleted checkpoints go unseen", exc)
        log.debug("ledger checkpoint at seq %d (%s) by %s", seq, reason, signed.key)
        return record

    def _report(self, check: LedgerCheck) -> None:
        """Say it loudly, once per break: the log, and an event on the ledger itself."""
        key = (check.fault, check.first_bad_seq)
        with self._flags:
            if key in self._reported:
                return
            self._reported.add(key)
        log.error(
            "THE LEDGER IS BROKEN at seq %s (%s): %s -- nothing is signed over a chain that "
            "does not verify from its last checkpoint; see docs/ledger.md",
            check.first_bad_seq,
            check.fault,
            check.problem,
        )
        anchor = check.checkpoint
        details: dict[str, Any] = {
            "first_bad_seq": check.first_bad_seq,
            "fault": check.fault,
            "problem": check.problem,
            "full": check.full,
            "checked": check.checked,
            "checkpoint": None if anchor is None else {"seq": anchor.seq, "key": anchor.key},
        }
        try:
            self.store.append_events([NewEvent(BROKEN, details)], actor=self.actor)
        except ConveyorError as error:
            log.error("cannot record %s on the ledger: %s", BROKEN, error.message)
