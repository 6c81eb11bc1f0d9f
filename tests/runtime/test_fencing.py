"""The runtime's fence: starts, adoptions and restarts under an older lease epoch are refused.

Two LocalTargets on one state dir stand for two servers on one host: the one that adopted
the environment at a newer epoch owns it; the other (a leader that was paused) can neither
start a new instance nor restart one the new owner stopped."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
from pathlib import Path

import pytest

from conveyor.errors import Fenced
from conveyor.runtime.local import LocalTarget
from conveyor.runtime.local.epochs import EpochRegister

from .conftest import catalog_spec, eventually


@pytest.mark.parametrize(
    ("sequence", "refused_at"),
    [
        ([1, 1, 2, 2, 3], None),
        ([2, 1], 1),
        ([0, 5, 0, 4], 3),  # 0 is "not fenced": always passes, never raises the mark
        ([3, 7, 6], 2),
    ],
)
def test_epoch_register(tmp_path: Path, sequence: list[int], refused_at: int | None) -> None:
    register = EpochRegister(tmp_path)
    for index, epoch in enumerate(sequence):
        if index == refused_at:
            with pytest.raises(Fenced, match=f"at epoch {epoch}"):
                register.admit("prod", epoch, "start instance x")
        else:
            register.admit("prod", epoch, "start instance x")
    assert register.seen("prod") == max(sequence[: refused_at or len(sequence)])
    assert register.seen("staging") == 0


def test_epoch_register_is_shared_by_every_register_on_the_directory(tmp_path: Path) -> None:
    EpochRegister(tmp_path).admit("prod", 4, "adopt instances")
    with pytest.raises(Fenced, match="holding epoch 4"):
        EpochRegister(tmp_path).admit("prod", 3, "start instance y")


@pytest.mark.integration
def test_a_stale_server_cannot_start_or_restart_instances(state_dir: Path) -> None:
    async def main() -> None:
        old, new = LocalTarget(state_dir), LocalTarget(state_dir)
        await old.adopt("dev", 1)
        spec = dataclasses.replace(catalog_spec("c1"), epoch=1)
        launched = await old.launch(spec)
        await eventually(lambda: old.observe("catalog", "dev")[0].ready, what="ready")
        # the old server is paused; the new one takes the environment over at epoch 2
        await new.adopt("dev", 2)
        assert [i.instance_id for i in new.observe("catalog", "dev")] == ["c1"]
        with pytest.raises(Fenced, match="epoch 1"):
            await old.launch(dataclasses.replace(catalog_spec("c2"), epoch=1))
        assert not (state_dir / "instances" / "c2.json").exists()
        # the old server's supervisor sees its process die: it must not restart it
        assert launched.pid is not None
        os.kill(launched.pid, signal.SIGKILL)
        await eventually(
            lambda: not old.observe("catalog", "dev"), what="the stale supervisor to give up"
        )
        # the new owner restarts it, once
        await eventually(
            lambda: (obs := new.observe("catalog", "dev")) != [] and obs[0].pid != launched.pid,
            what="the new owner to restart it",
            timeout=15,
        )
        await old.release("dev")
        await new.launch(dataclasses.replace(catalog_spec("c3"), epoch=2))
        assert sorted(i.instance_id for i in new.observe("catalog", "dev")) == ["c1", "c3"]
        await new.close(stop_instances=True)
        await old.close(stop_instances=False)

    asyncio.run(main())


@pytest.mark.integration
def test_a_stale_server_cannot_stop_an_instance(state_dir: Path) -> None:
    async def main() -> None:
        old, new = LocalTarget(state_dir), LocalTarget(state_dir)
        await old.adopt("dev", 1)
        launched = await old.launch(dataclasses.replace(catalog_spec("c1"), epoch=1))
        await new.adopt("dev", 2)
        with pytest.raises(Fenced, match="stop instance c1"):
            await old.stop("c1")
        assert old.observe("catalog", "dev") == []  # it let go, without killing
        [kept] = new.observe("catalog", "dev")
        assert kept.pid == launched.pid and (state_dir / "instances" / "c1.json").exists()
        await new.close(stop_instances=True)
        await old.close(stop_instances=False)

    asyncio.run(main())
