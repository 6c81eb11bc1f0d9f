"""The /proc view and process control, against real child processes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conveyor.runtime.local import process, procfs


def test_stat_of_this_process() -> None:
    stat = procfs.read_stat(os.getpid())
    assert stat is not None
    assert stat.pid == os.getpid()
    assert stat.pgid == os.getpgid(0)
    assert stat.state in "RS"
    assert procfs.is_running(os.getpid(), stat.start_ticks)
    assert not procfs.is_running(os.getpid(), stat.start_ticks + 1)  # a reused pid
    started = procfs.started_at(stat.start_ticks)
    assert started is not None and started <= time.time()


def test_a_zombie_counts_as_exited() -> None:
    child = subprocess.Popen(["true"])
    while (stat := procfs.read_stat(child.pid)) is not None and not stat.exited:
        time.sleep(0.01)
    assert stat is not None and stat.state == "Z"  # not yet collected
    assert not procfs.is_running(child.pid, stat.start_ticks)
    child.wait()
    assert procfs.read_stat(child.pid) is None


def test_command_names_with_spaces_and_parentheses_parse(tmp_path: Path) -> None:
    odd = tmp_path / "we ird) (name"
    odd.symlink_to("/bin/sleep")
    child = subprocess.Popen([str(odd), "5"])
    try:
        stat = procfs.read_stat(child.pid)
        assert stat is not None and stat.pgid == os.getpgid(0) and stat.state in "RSD"
    finally:
        child.kill()
        child.wait()


def test_scan_finds_tagged_processes_and_their_groups(state_dir: Path) -> None:
    env = {
        "PATH": os.environ["PATH"],
        "CONVEYOR_STATE_DIR": str(state_dir),
        "CONVEYOR_INSTANCE_ID": "i-1",
    }
    leader = subprocess.Popen(["/bin/sh", "-c", "sleep 30 & wait"], env=env, start_new_session=True)
    other = subprocess.Popen(["sleep", "30"], env={**env, "CONVEYOR_STATE_DIR": "/elsewhere"})
    try:
        deadline = time.monotonic() + 5
        while len(found := procfs.scan_tagged(str(state_dir))) < 2:
            assert time.monotonic() < deadline, found
            time.sleep(0.02)
        assert {p.pgid for p in found} == {leader.pid}
        assert {p.instance_id for p in found} == {"i-1"}
        assert [p.pid for p in found if p.is_leader] == [leader.pid]
        assert sorted(procfs.group_members(leader.pid)) == sorted(p.pid for p in found)
        assert procfs.carries_tag(leader.pid, str(state_dir), "i-1")
        assert not procfs.carries_tag(other.pid, str(state_dir))
    finally:
        os.killpg(leader.pid, 9)
        leader.wait()
        other.kill()
        other.wait()
    assert procfs.group_members(leader.pid) == []


@pytest.mark.parametrize("use_pidfd", [True, False], ids=["pidfd", "polling"])
def test_wait_exit_notices_an_exit(tmp_path: Path, use_pidfd: bool) -> None:
    async def main() -> None:
        ref = process.spawn(
            [sys.executable, "-c", "import time; time.sleep(0.3); print('bye')"],
            cwd=tmp_path,
            env={},
            log_path=tmp_path / "out.log",
        )
        assert ref.running()
        await asyncio.wait_for(process.wait_exit(ref, use_pidfd=use_pidfd), 10)
        assert not ref.running()
        assert process.collect(ref) == 0
        assert process.collect(ref) is None  # collected once

    asyncio.run(main())
    assert (tmp_path / "out.log").read_text() == "bye\n"


def test_terminate_group_escalates_to_sigkill(tmp_path: Path) -> None:
    async def main() -> None:
        ref = process.spawn(
            ["/bin/sh", "-c", "trap '' TERM; sleep 30 & wait; wait"],
            cwd=tmp_path,
            env={"PATH": os.environ["PATH"]},
            log_path=tmp_path / "out.log",
        )
        deadline = time.monotonic() + 5
        while len(procfs.group_members(ref.pgid)) < 2:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        members = procfs.group_members(ref.pgid)
        assert await process.terminate_group(ref, grace=0.3) is True
        assert procfs.group_members(ref.pgid) == []
        assert all(procfs.read_stat(p) is None or procfs.read_stat(p).exited for p in members)  # type: ignore[union-attr]
        assert process.collect(ref) == -9

    asyncio.run(main())


def test_spawn_failure_raises_oserror(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        process.spawn(["/no/such/program"], cwd=tmp_path, env={}, log_path=tmp_path / "x.log")
