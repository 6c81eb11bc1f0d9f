"""Crash safety: a new target adopts what the old one left, never duplicates, never orphans."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conveyor.runtime.local import LocalTarget, procfs
from conveyor.runtime.local.records import RecordStore

from .conftest import CATALOG, catalog_spec, eventually, get

pytestmark = pytest.mark.integration


def leaders(state_dir: Path) -> dict[str, list[int]]:
    """Instance id -> group leaders carrying that id: exactly one each means no duplicate."""
    found: dict[str, list[int]] = {}
    for p in procfs.scan_tagged(str(state_dir)):
        if p.is_leader:
            found.setdefault(p.instance_id, []).append(p.pid)
    return found


async def launch_ready(target: LocalTarget, *ids: str) -> dict[str, tuple[int, int]]:
    for instance_id in ids:
        await target.launch(catalog_spec(instance_id))
    await eventually(lambda: all(o.ready for o in target.all_instances()), what="ready")
    return {o.instance_id: (o.pid or 0, o.port) for o in target.all_instances()}


def edit_record(state_dir: Path, instance_id: str, **changes: object) -> None:
    path = state_dir / "instances" / f"{instance_id}.json"
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_a_new_target_adopts_running_instances(state_dir: Path) -> None:
    async def main() -> None:
        first = LocalTarget(state_dir)
        before = await launch_ready(first, "c1", "c2")
        await first.close(stop_instances=False)
        assert leaders(state_dir) == {i: [pid] for i, (pid, _) in before.items()}

        second = LocalTarget(state_dir)
        await second.start()
        adopted = {o.instance_id: (o.pid, o.port) for o in second.all_instances()}
        assert adopted == before
        await eventually(lambda: all(o.ready for o in second.all_instances()), what="ready")
        assert leaders(state_dir) == {i: [pid] for i, (pid, _) in before.items()}
        for _, port in before.values():
            assert (await asyncio.to_thread(get, port))[0] == 200
        log = (state_dir / "logs" / "catalog" / "dev" / "c1.log").read_text()
        assert f"--- adopted pid {before['c1'][0]} port {before['c1'][1]} at " in log
        assert all(o.restarts == 0 for o in second.all_instances())
        await second.close(stop_instances=True)

    asyncio.run(main())


def test_a_spawned_but_unrecorded_pid_is_found_by_its_environment(state_dir: Path) -> None:
    async def main() -> None:
        first = LocalTarget(state_dir)
        before = await launch_ready(first, "c1")
        await first.close(stop_instances=False)
        # the server died between spawning the process and writing its pid down
        edit_record(state_dir, "c1", pid=None, start_ticks=None)

        second = LocalTarget(state_dir)
        await second.start()
        assert [(o.pid, o.port) for o in second.all_instances()] == [before["c1"]]
        (record,) = RecordStore(state_dir / "instances").load_all()
        assert record.pid == before["c1"][0]
        assert leaders(state_dir) == {"c1": [before["c1"][0]]}
        await second.close(stop_instances=True)

    asyncio.run(main())


def test_a_reused_pid_is_not_mistaken_for_the_instance(state_dir: Path) -> None:
    async def main() -> None:
        first = LocalTarget(state_dir)
        before = await launch_ready(first, "c1")
        await first.close(stop_instances=False)
        stranger = subprocess.Popen(["sleep", "30"])
        try:
            stat = procfs.read_stat(stranger.pid)
            assert stat is not None
            # the record names a pid that now belongs to someone else
            edit_record(state_dir, "c1", pid=stranger.pid, start_ticks=stat.start_ticks - 1)
            second = LocalTarget(state_dir)
            await second.start()
            assert [o.pid for o in second.all_instances()] == [before["c1"][0]]
            assert stranger.poll() is None  # left alone
            await second.close(stop_instances=True)
        finally:
            stranger.kill()
            stranger.wait()

    asyncio.run(main())


def test_an_orphan_without_a_record_is_killed(state_dir: Path) -> None:
    async def main() -> None:
        first = LocalTarget(state_dir)
        before = await launch_ready(first, "c1", "c2")
        await first.close(stop_instances=False)
        (state_dir / "instances" / "c2.json").unlink()
        orphan = procfs.read_stat(before["c2"][0])
        assert orphan is not None

        second = LocalTarget(state_dir)
        await second.start()
        assert not procfs.is_running(orphan.pid, orphan.start_ticks)
        assert procfs.group_members(orphan.pid) == []
        assert [o.instance_id for o in second.all_instances()] == ["c1"]
        assert leaders(state_dir) == {"c1": [before["c1"][0]]}
        await second.close(stop_instances=True)

    asyncio.run(main())


def test_a_recorded_instance_whose_process_died_is_started_again(state_dir: Path) -> None:
    async def main() -> None:
        first = LocalTarget(state_dir)
        before = await launch_ready(first, "c1")
        await first.close(stop_instances=False)
        os.killpg(before["c1"][0], signal.SIGKILL)
        await eventually(lambda: leaders(state_dir) == {}, what="the group to die")

        second = LocalTarget(state_dir)
        await second.start()
        (obs,) = second.all_instances()
        assert obs.pid != before["c1"][0] and obs.port == before["c1"][1]
        assert obs.restarts == 1
        await eventually(lambda: second.all_instances()[0].ready, what="ready")
        await second.close(stop_instances=True)

    asyncio.run(main())


def test_an_interrupted_stop_is_finished(state_dir: Path) -> None:
    async def main() -> None:
        first = LocalTarget(state_dir)
        before = await launch_ready(first, "c1")
        await first.close(stop_instances=False)
        edit_record(state_dir, "c1", stopping=True)

        second = LocalTarget(state_dir)
        await second.start()
        assert second.all_instances() == []
        assert procfs.read_stat(before["c1"][0]) is None
        assert list((state_dir / "instances").iterdir()) == []

    asyncio.run(main())


SERVER = textwrap.dedent(
    """
    import asyncio, json, sys
    from pathlib import Path
    from conveyor.core.model import InstanceSpec, ProbeSpec
    from conveyor.runtime.local import LocalTarget

    async def main():
        target = LocalTarget(Path(sys.argv[1]))
        for i in ("c1", "c2"):
            await target.launch(InstanceSpec(
                instance_id=i, project="shop", service="catalog", env="dev", version="v1",
                revision=1, artifact_digest="sha256:0", artifact_dir=Path(sys.argv[2]),
                command="python3 app/server.py", environment={},
                readiness=ProbeSpec("/health/ready", period=0.1)))
        while not all(o.ready for o in target.all_instances()):
            await asyncio.sleep(0.05)
        print(json.dumps({o.instance_id: [o.pid, o.port] for o in target.all_instances()}),
              flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main())
    """
)


def test_instances_survive_a_sigkilled_server_and_are_adopted(state_dir: Path) -> None:
    """The real thing: the owning server is another process, killed without warning."""
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(state_dir), str(CATALOG)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        before = {i: tuple(v) for i, v in json.loads(server.stdout.readline()).items()}
    finally:
        server.kill()
        server.wait()
        if server.stdout is not None:
            server.stdout.close()
    assert set(before) == {"c1", "c2"}

    async def main() -> None:
        target = LocalTarget(state_dir)
        await target.start()
        assert {o.instance_id: (o.pid, o.port) for o in target.all_instances()} == before
        await eventually(lambda: all(o.ready for o in target.all_instances()), what="ready")
        # not our children: their exit is still noticed, and they are restarted
        pid = before["c1"][0]
        os.killpg(pid, signal.SIGKILL)
        await eventually(
            lambda: target.observe("catalog", "dev")[0].restarts == 1, what="a restart"
        )
        c1 = next(o for o in target.all_instances() if o.instance_id == "c1")
        assert c1.pid != pid and c1.port == before["c1"][1]
        assert c1.last_exit_code is None  # an adopted process's status went to its new parent
        await eventually(lambda: all(o.ready for o in target.all_instances()), what="ready")
        assert sorted(leaders(state_dir)) == ["c1", "c2"]
        assert all(len(p) == 1 for p in leaders(state_dir).values())
        began = time.monotonic()
        await target.close(stop_instances=True)
        assert time.monotonic() - began < 10

    asyncio.run(main())
