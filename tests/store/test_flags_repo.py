"""Live flags and guarded rollouts in the store, on SQLite and PostgreSQL: each write with its
ledger event in one transaction, optimistic on the revision it read."""

from __future__ import annotations

import pytest

from conveyor.errors import Conflict
from conveyor.store import Store
from conveyor.store.flags_repo import NOT_LIVE
from conveyor.store.records import NewEvent


def test_live_flags_are_written_with_their_event_and_reset(store: Store) -> None:
    event = NewEvent("flag.changed", {"flag": "f", "reason": "why", "diff": []}, env="p")
    revision = store.write_live_flags({"f": ({"kind": "boolean"}, NOT_LIVE)}, [event], actor="dana")
    [live] = store.live_flags().values()
    assert (live.key, live.revision, live.updated_by) == ("f", revision, "dana")
    [written] = store.events(kinds=["flag.changed"])
    assert written.seq == revision and written.actor == "dana" and written.env == "p"

    with pytest.raises(Conflict):  # someone read it before the first change
        store.write_live_flags({"f": ({"kind": "string"}, NOT_LIVE)}, [event], actor="sam")
    assert store.live_flags()["f"].definition == {"kind": "boolean"}

    store.write_live_flags({"f": (None, revision)}, [NewEvent("flag.reset", {})], actor="dana")
    assert store.live_flags() == {}


def test_guarded_rollouts_move_with_the_flag(store: Store) -> None:
    started = store.create_flag_rollout(
        "f", "p", {"steps": [1, 50]}, {"step": 0}, NewEvent("flag.rollout.started", {}), actor="a"
    )
    with pytest.raises(Conflict):
        store.create_flag_rollout("f", "p", {}, {}, NewEvent("flag.rollout.started", {}), actor="a")
    moved = store.update_flag_rollout(
        started.id,
        started.version,
        "running",
        {"step": 1},
        [NewEvent("flag.rollout.step", {"flag": "f"})],
        actor="conveyor",
        flag_change=("f", {"kind": "boolean"}, NOT_LIVE),
    )
    assert moved.status == {"step": 1} and moved.version == 2
    assert store.live_flags()["f"].revision == store.events()[-1].seq
    with pytest.raises(Conflict):
        store.update_flag_rollout(started.id, 1, "aborted", {}, [], actor="conveyor")
    assert [r.id for r in store.flag_rollouts(running=True)] == [started.id]
