"""The server's ledger: checkpoints signed with the real keyring, verification, start-up.

Real store on each engine, real ``Keyring`` on disk, the real DSSE code; attacks are made
in plain SQL behind the store's back, as someone with the database's password would. The
last test goes through the real stack and the HTTP API.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
import sqlalchemy as sa

from conveyor.application.ledger import (
    BROKEN,
    SECURITY_EVENTS,
    CheckpointPolicy,
    Ledger,
    checkpoint_due,
)
from conveyor.application.notary import WITNESS_NAME, KeyringNotary
from conveyor.artifacts.signing import Keyring
from conveyor.server.api import create_app
from conveyor.store import NewEvent, Store
from conveyor.store.engine import create_engine
from conveyor.store.ledger import CHECKPOINT_PAYLOAD_TYPE, checkpoint_statement, read_checkpoint

from ..controller.harness import run, stack
from ..store.helpers import FakeClock, fill, recompute_from

T = TypeVar("T")
POLICY = CheckpointPolicy(interval=3600.0, every=50, poll=0.01)


@dataclass
class Parts:
    store: Store
    keyring: Keyring
    ledger: Ledger
    raw: sa.Engine
    clock: FakeClock

    def kinds(self) -> list[str]:
        return [e.kind for e in self.store.events(limit=5000)]


def make(store: Store, keys: Path, clock: FakeClock, policy: CheckpointPolicy = POLICY) -> Ledger:
    ledger = Ledger(store, KeyringNotary(Keyring(keys)), clock, policy=policy)
    store.on_append(ledger.observe)
    return ledger


@pytest.fixture
def parts(database_url: str, tmp_path: Path) -> Iterator[Parts]:
    clock = FakeClock()
    raw = create_engine(database_url)
    with Store.open(database_url, clock=clock) as store:
        ledger = make(store, tmp_path / "keys", clock)
        yield Parts(store, Keyring(tmp_path / "keys"), ledger, raw, clock)
    raw.dispose()


# --- when a checkpoint is due (pure) ------------------------------------------------------


@pytest.mark.parametrize(
    ("covered", "seen", "urgent", "since", "due"),
    [
        (10, 10, None, 0.0, None),  # nothing new, interval not up
        (10, 12, None, 0.0, None),  # a little new, nothing urgent
        (10, 12, ("keys.rotated", 12), 0.0, "keys.rotated"),  # a security event: now
        (12, 12, ("keys.rotated", 12), 0.0, None),  # ... already covered by an attempt
        (10, 60, None, 0.0, "events"),  # every 50 events
        (10, 59, None, 0.0, None),
        (10, 10, None, 3600.0, "interval"),  # the interval fires even with nothing seen
        (10, 60, ("config.invalid", 11), 3600.0, "config.invalid"),  # urgent names itself
    ],
)
def test_checkpoint_due(
    covered: int, seen: int, urgent: tuple[str, int] | None, since: float, due: str | None
) -> None:
    got = checkpoint_due(POLICY, covered=covered, seen=seen, urgent=urgent, since=since)
    assert got == due


def test_the_security_events_are_the_ones_the_issue_names_and_more() -> None:
    assert {"keys.rotated", "config.invalid", "artifact.refused"} <= SECURITY_EVENTS
    assert BROKEN not in SECURITY_EVENTS  # a broken chain is never signed over


# --- start-up and checkpoints -------------------------------------------------------------


def test_an_empty_ledger_starts_ok_and_signs_nothing(parts: Parts) -> None:
    check = parts.ledger.start()
    assert check.ok and check.checked == 0
    assert parts.store.checkpoints() == []


def test_start_verifies_and_signs_the_head_with_the_servers_key(parts: Parts) -> None:
    fill(parts.store, 30)
    check = parts.ledger.start()
    assert check.ok and check.checked == 30 and check.full  # no checkpoint yet: from genesis
    [stored] = parts.store.checkpoints()
    assert (stored.seq, stored.reason) == (30, "start")
    assert stored.hash == parts.store.ledger_head()[1]
    assert stored.key == parts.keyring.current().fingerprint
    witness = parts.keyring.directory / WITNESS_NAME
    assert json.loads(witness.read_text()) == dict(stored.envelope)
    assert witness.stat().st_mode & 0o777 == 0o600
    again = parts.ledger.verify(full=False)
    assert again.ok and again.checked == 1 and again.checkpoint is not None


def test_every_security_event_asks_for_a_checkpoint_at_once(parts: Parts) -> None:
    parts.ledger.start()
    for kind in sorted(SECURITY_EVENTS):
        parts.store.append_events([NewEvent("step"), NewEvent(kind)], actor="x")
        assert parts.ledger.due() == kind
        parts.ledger.checkpoint(kind)
        assert parts.ledger.due() is None
        newest = parts.store.checkpoints(limit=1)[0]
        assert (newest.seq, newest.reason) == (parts.store.ledger_head()[0], kind)


def test_ordinary_events_wait_for_the_count_or_the_interval(parts: Parts) -> None:
    parts.ledger.start()
    fill(parts.store, 49)
    assert parts.ledger.due() is None
    fill(parts.store, 1)
    assert parts.ledger.due() == "events"


def test_the_interval_signs_only_when_the_head_moved(database_url: str, tmp_path: Path) -> None:
    clock = FakeClock()
    with Store.open(database_url, clock=clock) as store:
        ledger = make(store, tmp_path / "keys", clock, CheckpointPolicy(interval=0.0, poll=0.01))
        fill(store, 3)
        ledger.start()
        assert ledger.due() == "interval"
        ledger.checkpoint("interval")
        assert [c.reason for c in store.checkpoints()] == ["start"]  # the head had not moved
        fill(store, 1)
        ledger.checkpoint("interval")
        assert [(c.seq, c.reason) for c in store.checkpoints()] == [(4, "interval"), (3, "start")]


def test_the_background_task_signs_after_a_security_event(parts: Parts) -> None:
    async def scenario() -> None:
        task = asyncio.create_task(parts.ledger.run())
        try:
            await wait_for(lambda: bool(parts.store.checkpoints()) or None)
            fill(parts.store, 2)
            rotated, _ = parts.keyring.rotate()
            parts.store.append_events([NewEvent("keys.rotated")], actor="admin")
            newest = await wait_for(
                lambda: next(
                    (c for c in parts.store.checkpoints(limit=1) if c.reason == "keys.rotated"),
                    None,
                )
            )
            assert newest.seq == parts.store.ledger_head()[0]
            assert newest.key == rotated.fingerprint  # signed by the new key at once
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            parts.ledger.wait_idle()

    parts.store.append_events([NewEvent("first")], actor="x")
    run(scenario())
    assert parts.ledger.verify(full=True).ok  # the old key's checkpoint is still trusted


# --- a broken ledger ----------------------------------------------------------------------


def test_an_edited_row_is_reported_at_start_and_on_the_ledger_once(
    parts: Parts, caplog: pytest.LogCaptureFixture
) -> None:
    fill(parts.store, 20)
    parts.ledger.start()
    fill(parts.store, 10)
    with parts.raw.begin() as conn:
        conn.execute(sa.text("UPDATE events SET actor = 'mallory' WHERE seq = 25"))
    restarted = make(parts.store, parts.keyring.directory, parts.clock)
    check = restarted.start()
    assert (check.ok, check.first_bad_seq, check.fault) == (False, 25, "hash")
    assert check.checked == 5  # seq 20..24, from the start checkpoint
    assert "THE LEDGER IS BROKEN at seq 25" in caplog.text
    [broken] = [e for e in parts.store.events(limit=100) if e.kind == BROKEN]
    assert broken.details["first_bad_seq"] == 25 and broken.actor == "conveyor"
    assert [c.reason for c in parts.store.checkpoints()] == ["start"]  # nothing signed over it
    restarted.checkpoint("interval")
    assert restarted.verify(full=False).first_bad_seq == 25
    assert parts.kinds().count(BROKEN) == 1
    assert [c.reason for c in parts.store.checkpoints()] == ["start"]


def test_a_recomputed_chain_fails_on_the_signed_checkpoint(parts: Parts) -> None:
    fill(parts.store, 30)
    parts.ledger.start()
    fill(parts.store, 5)
    recompute_from(parts.raw, parts.store, 12, '{"n": 1200}')
    assert parts.store.verify_ledger().ok  # without checkpoints the rewrite would pass
    for full in (False, True):
        check = parts.ledger.verify(full=full)
        assert (check.ok, check.first_bad_seq, check.fault) == (False, 30, "checkpoint")
        assert "rewritten" in (check.problem or "")
    parts.ledger.checkpoint("interval")
    assert [c.seq for c in parts.store.checkpoints()] == [30]


def test_deleting_the_checkpoint_rows_does_not_escape_the_witness(parts: Parts) -> None:
    fill(parts.store, 30)
    parts.ledger.start()
    recompute_from(parts.raw, parts.store, 12, '{"n": 1200}')
    with parts.raw.begin() as conn:
        conn.execute(sa.text("DELETE FROM ledger_checkpoints"))
    check = make(parts.store, parts.keyring.directory, parts.clock).start()
    assert (check.ok, check.first_bad_seq, check.fault) == (False, 30, "checkpoint")


def test_a_database_restored_from_an_older_backup_is_reported(parts: Parts) -> None:
    fill(parts.store, 30)
    parts.ledger.start()
    with parts.raw.begin() as conn:  # as if yesterday's backup were restored
        conn.execute(sa.text("DELETE FROM events WHERE seq > 20"))
        conn.execute(sa.text("DELETE FROM ledger_checkpoints"))
        head = conn.execute(sa.text("SELECT hash FROM events WHERE seq = 20")).scalar_one()
        conn.execute(sa.text("UPDATE ledger_head SET seq = 20, hash = :h"), {"h": head})
    check = make(parts.store, parts.keyring.directory, parts.clock).start()
    assert (check.ok, check.first_bad_seq, check.fault) == (False, 21, "missing")
    assert "older backup" in (check.problem or "")


def test_a_replaced_database_is_not_judged_by_the_old_witness(
    parts: Parts, caplog: pytest.LogCaptureFixture
) -> None:
    fill(parts.store, 30)
    parts.ledger.start()
    with parts.raw.begin() as conn:  # a fresh state.db: nothing of the old ledger is left
        conn.execute(sa.text("DELETE FROM events"))
        conn.execute(sa.text("DELETE FROM ledger_checkpoints"))
        conn.execute(sa.text("UPDATE ledger_head SET seq = 0, hash = :g"), {"g": "0" * 64})
    fill(parts.store, 5)
    check = make(parts.store, parts.keyring.directory, parts.clock).start()
    assert check.ok and check.checked == 5
    assert "older than this ledger" in caplog.text
    assert [(c.seq, c.reason) for c in parts.store.checkpoints()] == [(5, "start")]


def test_a_checkpoint_signed_by_an_untrusted_key_is_reported(parts: Parts, tmp_path: Path) -> None:
    fill(parts.store, 10)
    parts.ledger.start()
    fill(parts.store, 5)
    mallory = KeyringNotary(Keyring(tmp_path / "mallory"))  # a key the server never trusted
    seq, hash_ = parts.store.ledger_head()
    envelope = mallory.sign(CHECKPOINT_PAYLOAD_TYPE, checkpoint_statement(seq, hash_, 1.0))
    payload, key = mallory.opener(CHECKPOINT_PAYLOAD_TYPE)(envelope)
    parts.store.record_checkpoint(read_checkpoint(payload, key), envelope, reason="forged")
    check = parts.ledger.verify(full=False)
    assert (check.ok, check.first_bad_seq, check.fault) == (False, 15, "signature")
    assert "no trusted key" in (check.problem or "")


# --- through the API ----------------------------------------------------------------------


@pytest.mark.integration
def test_the_api_answers_and_names_the_first_broken_link(tmp_path: Path, database_url: str) -> None:
    async def scenario() -> None:
        async with stack(tmp_path, database_url, instances=1) as s:
            s.app.tokens.bootstrap(s.parts.layout.admin_token, "admin@test")
            admin = {"authorization": f"Bearer {s.parts.layout.admin_token.read_text().strip()}"}
            api = create_app(s.app, project_name="ledger")
            transport = httpx.ASGITransport(app=api)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://127.0.0.1"
            ) as client:
                made = await client.post(
                    "/api/v1/tokens", json={"name": "auditor", "role": "viewer"}, headers=admin
                )
                viewer = {"authorization": f"Bearer {made.json()['secret']}"}
                assert (await client.get("/api/v1/ledger/verify")).status_code == 401

                rotated = await client.post("/api/v1/keys/rotate", json={}, headers=admin)
                assert rotated.status_code == 200, rotated.text
                key = rotated.json()["key"]
                rotation = s.store.events(limit=100)[-1]
                assert rotation.kind == "keys.rotated" and rotation.actor == "admin@test"
                await wait_for(  # signed at once (or by the start-up check, if that ran later)
                    lambda: any(c.seq >= rotation.seq for c in s.store.checkpoints()) or None
                )
                answer = (await client.get("/api/v1/ledger/verify", headers=viewer)).json()
                head = s.store.ledger_head()[0]
                assert answer["ok"] is True and answer["full"] is False
                assert answer["checkpoint"]["key"] == key
                assert answer["checkpoint"]["seq"] == answer["head"] == head
                assert answer["checked"] == 1
                assert set(answer) == {
                    "ok", "full", "checked", "first_bad_seq", "fault", "problem", "head",
                    "checkpoint",
                }  # fmt: skip

                raw = create_engine(database_url)
                try:
                    with raw.begin() as conn:
                        conn.execute(sa.text("UPDATE events SET actor = 'mallory' WHERE seq = 1"))
                finally:
                    raw.dispose()
                params = {"full": "1"}
                full = (
                    await client.get("/api/v1/ledger/verify", params=params, headers=viewer)
                ).json()
                assert full["ok"] is False and full["full"] is True
                assert (full["first_bad_seq"], full["fault"], full["checked"]) == (1, "hash", 0)
                assert "seq 1" in full["problem"]
                broken = s.store.events(limit=100)[-1]  # the finding is on the ledger too
                assert (broken.kind, broken.details["first_bad_seq"]) == (BROKEN, 1)
                params = {"full": "true"}  # what the CLI's client sends for a flag
                same = await client.get("/api/v1/ledger/verify", params=params, headers=viewer)
                assert same.json() == {**full, "head": broken.seq}
                params = {"full": "yes"}
                bad = await client.get("/api/v1/ledger/verify", params=params, headers=viewer)
                assert bad.status_code == 400
                assert "'full'" in bad.json()["message"]

    run(scenario())


async def wait_for(probe: Callable[[], T | None], timeout: float = 10.0) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found is not None:
            return found
        await asyncio.sleep(0.02)
    raise AssertionError("timed out")
