"""Signed checkpoints against the real store, on each engine: the attacks they must catch.

Every attack is made the way someone with write access to the database would make it:
plain SQL behind the store's back. The key is not in the database, so checkpoints are
signed here with an in-memory key (``helpers.Signer``), through the real DSSE code.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from conveyor.errors import StoreError
from conveyor.store import NewEvent, Store, ledger

from .helpers import Signer, checkpoint, fill, recompute_from


def test_checkpoints_round_trip_newest_first(store: Store) -> None:
    signer = Signer()
    fill(store, 5)
    checkpoint(store, signer, 2, reason="start")
    checkpoint(store, signer, 5, reason="keys.rotated")
    stored = store.checkpoints()
    assert [(c.seq, c.reason) for c in stored] == [(5, "keys.rotated"), (2, "start")]
    assert stored[0].key == signer.fingerprint
    assert stored[0].envelope["payloadType"] == ledger.CHECKPOINT_PAYLOAD_TYPE
    assert store.ledger_head() == (5, store.events()[-1].hash)


def test_an_intact_ledger_verifies_with_its_checkpoints(store: Store) -> None:
    signer = Signer()
    fill(store, 30)
    for seq in (10, 20):
        checkpoint(store, signer, seq)
    full = store.verify_ledger(opener=signer.opener())
    assert full.ok and full.full and full.checked == 30
    assert full.checkpoint is not None and full.checkpoint.seq == 20
    suffix = store.verify_ledger(opener=signer.opener(), from_checkpoint=True)
    assert suffix.ok and not suffix.full
    assert suffix.checked == 11  # seq 20..30: the anchor's event and what came after it
    assert suffix.head == full.head == (30, store.events()[-1].hash)


def test_verification_from_a_checkpoint_reads_only_the_suffix(store: Store) -> None:
    signer = Signer()
    for _ in range(3):  # several pages of the event reader
        fill(store, 1000)
    checkpoint(store, signer, 2500)
    check = store.verify_ledger(opener=signer.opener(), from_checkpoint=True)
    assert check.ok and check.checked == 501
    assert store.verify_ledger(opener=signer.opener()).checked == 3000


def test_without_a_checkpoint_verification_from_one_walks_everything(store: Store) -> None:
    signer = Signer()
    fill(store, 12)
    check = store.verify_ledger(opener=signer.opener(), from_checkpoint=True)
    assert check.ok and check.checked == 12 and check.checkpoint is None


def test_an_edited_row_is_named_in_both_modes(store: Store, raw: sa.Engine) -> None:
    signer = Signer()
    fill(store, 30)
    checkpoint(store, signer, 10)
    with raw.begin() as conn:
        conn.execute(sa.text("UPDATE events SET actor = 'mallory' WHERE seq = 24"))
    for from_checkpoint in (False, True):
        check = store.verify_ledger(opener=signer.opener(), from_checkpoint=from_checkpoint)
        assert (check.ok, check.first_bad_seq, check.fault) == (False, 24, "hash")
        assert check.checked == (23 if not from_checkpoint else 14)


def test_a_deleted_tail_is_a_head_mismatch(store: Store, raw: sa.Engine) -> None:
    signer = Signer()
    fill(store, 10)
    checkpoint(store, signer, 5)
    with raw.begin() as conn:
        conn.execute(sa.text("DELETE FROM events WHERE seq > 7"))
    for from_checkpoint in (False, True):
        check = store.verify_ledger(opener=signer.opener(), from_checkpoint=from_checkpoint)
        assert (check.ok, check.first_bad_seq, check.fault) == (False, 8, "head")


def test_a_recomputed_chain_fails_on_the_checkpoint(store: Store, raw: sa.Engine) -> None:
    signer = Signer()
    fill(store, 40)
    checkpoint(store, signer, 10)
    checkpoint(store, signer, 30)
    recompute_from(raw, store, 17, '{"n": 1700}')
    assert store.verify_ledger().ok  # the chain alone cannot tell
    full = store.verify_ledger(opener=signer.opener())
    assert (full.ok, full.first_bad_seq, full.fault) == (False, 30, "checkpoint")
    assert full.checkpoint is not None and full.checkpoint.seq == 10
    assert "seq 11..30" in (full.problem or "")
    suffix = store.verify_ledger(opener=signer.opener(), from_checkpoint=True)
    assert (suffix.ok, suffix.first_bad_seq, suffix.fault, suffix.checked) == (
        False,
        30,
        "checkpoint",
        0,
    )


def test_deleting_the_checkpoints_too_is_caught_by_the_servers_witness(
    store: Store, raw: sa.Engine
) -> None:
    signer = Signer()
    fill(store, 40)
    checkpoint(store, signer, 30)
    witness = store.checkpoints()[0]
    recompute_from(raw, store, 17, '{"n": 1700}')
    with raw.begin() as conn:
        conn.execute(sa.text("DELETE FROM ledger_checkpoints"))
    assert store.verify_ledger(opener=signer.opener()).ok  # the database alone is fooled
    known = [signer.opener()(witness.envelope)]
    for from_checkpoint in (False, True):
        check = store.verify_ledger(
            opener=signer.opener(), from_checkpoint=from_checkpoint, known=known
        )
        assert (check.ok, check.first_bad_seq, check.fault) == (False, 30, "checkpoint")


def test_a_forged_checkpoint_is_reported(store: Store) -> None:
    server, mallory = Signer(), Signer()
    fill(store, 20)
    checkpoint(store, server, 10)
    checkpoint(store, mallory, 18)  # signed, but by a key the server does not trust
    full = store.verify_ledger(opener=server.opener())
    assert (full.ok, full.first_bad_seq, full.fault) == (False, 18, "signature")
    assert "no trusted key" in (full.problem or "")
    suffix = store.verify_ledger(opener=server.opener(), from_checkpoint=True)
    assert (suffix.ok, suffix.first_bad_seq, suffix.fault) == (False, 18, "signature")
    assert suffix.checkpoint is not None and suffix.checkpoint.seq == 10  # the anchor used
    assert suffix.checked == 8  # seq 10..17, then the forged checkpoint at 18


def test_many_forged_checkpoints_do_not_hide_the_last_good_one(store: Store) -> None:
    server, mallory = Signer(), Signer()
    fill(store, 40)
    checkpoint(store, server, 5)
    for seq in range(20, 40):  # more than a page of the newest-first search
        checkpoint(store, mallory, seq)
    check = store.verify_ledger(opener=server.opener(), from_checkpoint=True)
    assert check.checkpoint is not None and check.checkpoint.seq == 5
    assert (check.first_bad_seq, check.fault, check.checked) == (20, "signature", 15)


def test_a_key_trusted_by_the_verifier_makes_the_same_checkpoint_good(store: Store) -> None:
    old = Signer()
    new = Signer(old)  # rotation: the previous public key stays trusted
    fill(store, 20)
    checkpoint(store, old, 10)
    checkpoint(store, new, 20)
    assert store.verify_ledger(opener=new.opener()).ok


def test_a_checkpoint_row_edited_to_point_elsewhere_is_reported(
    store: Store, raw: sa.Engine
) -> None:
    signer = Signer()
    fill(store, 20)
    checkpoint(store, signer, 10)
    checkpoint(store, signer, 15)
    with raw.begin() as conn:  # make the old checkpoint look like the newest one
        conn.execute(sa.text("UPDATE ledger_checkpoints SET seq = 19 WHERE seq = 10"))
    check = store.verify_ledger(opener=signer.opener(), from_checkpoint=True)
    assert (check.ok, check.first_bad_seq, check.fault) == (False, 19, "signature")
    assert "its row says seq 19" in (check.problem or "")


def test_observers_hear_of_committed_appends_only(store: Store) -> None:
    heard: list[list[int]] = []
    store.on_append(lambda events: heard.append([e.seq for e in events]))
    fill(store, 3)
    store.append_events([], actor="x")
    assert heard == [[1, 2, 3]]
    with pytest.raises(TypeError):
        store.append_events([NewEvent("bad", {"x": object()})], actor="x")
    assert heard == [[1, 2, 3]]


def test_appending_behind_a_wound_back_head_says_the_ledger_was_tampered_with(
    store: Store, raw: sa.Engine
) -> None:
    fill(store, 5)
    with raw.begin() as conn:
        conn.execute(sa.text("UPDATE ledger_head SET seq = 3 WHERE id = 1"))
    with pytest.raises(StoreError) as info:
        fill(store, 1)
    assert "seq 4 already exists" in info.value.message
    assert "tampered" in info.value.message
    assert len(store.events()) == 5
