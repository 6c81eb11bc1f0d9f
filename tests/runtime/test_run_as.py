"""Instances with ``run_as``: started as that user, able to read their tree and nothing else.

Real processes. The instance is a probe (``tests.run_as_support``) that reports what it can
read under ``.conveyor/`` and then serves HTTP. The checks that need root and the
unprivileged user skip without them; the failures a server that is not root must report
are checked both with an injected server user and from a real process of that user.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor.core.model import InstanceSpec, SecretRef
from conveyor.layout import Layout
from conveyor.run_as import User
from conveyor.runtime.local import LaunchFailed, LocalTarget, procfs
from tests.run_as_support import (
    RUN_AS,
    SYSTEM_PYTHON,
    assert_isolated,
    needs_run_as,
    probe_results,
    project,
    the_user,
    unpack_probe,
)

from .conftest import catalog_spec, eventually

pytestmark = pytest.mark.integration
__all__ = ["project"]  # the fixture, imported to be used

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture
def runtime(project: Layout) -> Iterator[Path]:
    """The runtime's state dir in a reachable project; no process may outlive the test."""
    directory = project.directory(project.runtime).resolve()
    yield directory
    strays = procfs.scan_tagged(str(directory))
    for stray in strays:
        os.kill(stray.pid, signal.SIGKILL)
    assert not strays, f"instance processes left running after the test: {strays}"


def probe_spec(layout: Layout, instance_id: str = "p1", **changes: object) -> InstanceSpec:
    tree = layout.unpacked / ("a" * 64)
    if not tree.exists():
        unpack_probe(layout)
    assert SYSTEM_PYTHON is not None
    spec = catalog_spec(
        instance_id,
        artifact_dir=tree,
        command=(SYSTEM_PYTHON, "probe.py"),
        readiness=None,
        environment={"PROBE_STATE": str(layout.state)},
    )
    return dataclasses.replace(spec, run_as=RUN_AS, **changes)  # type: ignore[arg-type]


def ids(pid: int) -> tuple[int, int, str]:
    """(effective uid, effective gid, supplementary groups) from /proc/PID/status."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["Uid"].split()[1]), int(fields["Gid"].split()[1]), fields["Groups"].strip()


async def reported(target: LocalTarget, service: str = "catalog") -> dict[str, object]:
    """The probe's report, from the instance's log, once it is ready."""
    await eventually(lambda: bool(target.observe(service, "dev")[0].ready), what="ready")
    log = target.observe(service, "dev")[0].log_path
    assert log is not None
    await eventually(lambda: probe_results(log.read_text()) is not None, what="the report")
    found = probe_results(log.read_text())
    assert found is not None
    return found


@needs_run_as
def test_an_instance_runs_as_its_user_and_reads_its_tree_only(
    project: Layout, runtime: Path
) -> None:
    user = the_user()

    async def main() -> None:
        target = LocalTarget(runtime)
        await target.launch(probe_spec(project))
        found = await reported(target)
        pid = target.observe("catalog", "dev")[0].pid
        assert pid is not None
        assert ids(pid) == (user.uid, user.gid, "")
        assert_isolated(found, user)
        assert found["write_here"] == "PermissionError"  # the tree is read-only to it
        assert found["home"] == "/"  # a --no-create-home account: a neutral HOME
        # The way in is searchable, nothing more; the rest of .conveyor/ stays private.
        modes = {p: stat.S_IMODE(p.stat().st_mode) for p in (project.state, project.unpacked)}
        assert set(modes.values()) == {0o711}
        assert stat.S_IMODE(runtime.stat().st_mode) == 0o700
        assert stat.S_IMODE(project.admin_token.stat().st_mode) == 0o600
        await target.close(stop_instances=True)

    asyncio.run(main())


@needs_run_as
def test_behind_the_masking_relay_only_the_service_switches(
    project: Layout, runtime: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An instance with secrets: the relay stays root to write the log, the service does not."""
    user = the_user()
    monkeypatch.setenv("CONVEYOR_TEST_RUN_AS_SECRET", "s3cret-for-the-service")
    secrets = {"PROBE_SECRET": SecretRef("env", "CONVEYOR_TEST_RUN_AS_SECRET")}

    async def main() -> None:
        target = LocalTarget(runtime)
        await target.launch(probe_spec(project, secrets=secrets))
        found = await reported(target)
        leader = target.observe("catalog", "dev")[0].pid
        assert leader is not None
        assert ids(leader)[0] == 0  # the relay
        service = [p for p in procfs.group_members(leader) if p != leader]
        assert [ids(p)[:2] for p in service] == [(user.uid, user.gid)]
        assert_isolated(found, user)
        assert found["secret"] != "s3cret-for-the-service"  # it got it; the log masks it
        log = target.observe("catalog", "dev")[0].log_path
        assert log is not None and "s3cret-for-the-service" not in log.read_text()
        await target.close(stop_instances=True)

    asyncio.run(main())


@needs_run_as
def test_a_restarted_server_respawns_the_instance_as_its_user(
    project: Layout, runtime: Path
) -> None:
    """The record says who the instance runs as; a server that finds it dead respawns it so."""
    user = the_user()

    async def main() -> None:
        first = LocalTarget(runtime)
        await first.launch(probe_spec(project))
        await reported(first)
        pid = first.observe("catalog", "dev")[0].pid
        assert pid is not None
        await first.close(stop_instances=False)  # a planned restart: it keeps running
        record = json.loads((runtime / "instances" / "p1.json").read_text())
        assert record["spec"]["run_as"] == RUN_AS

        second = LocalTarget(runtime)
        await second.start()
        assert second.observe("catalog", "dev")[0].pid == pid  # adopted, not restarted
        await second.close(stop_instances=False)

        os.killpg(pid, signal.SIGKILL)  # it dies while no server watches
        await eventually(lambda: not procfs.group_members(pid), what="the group gone")
        third = LocalTarget(runtime)
        await third.start()
        await eventually(lambda: bool(third.observe("catalog", "dev")[0].ready), what="ready")
        respawned = third.observe("catalog", "dev")[0].pid
        assert respawned is not None and respawned != pid
        assert ids(respawned)[:2] == (user.uid, user.gid)
        await third.close(stop_instances=True)

    asyncio.run(main())


@needs_run_as
def test_a_tree_the_user_cannot_reach_fails_the_launch(tmp_path: Path) -> None:
    """pytest's tmp directories are 0700: the tree is there, but not for that user."""
    layout = Layout(tmp_path / "project").ensure()
    spec = probe_spec(layout)
    state = layout.directory(layout.runtime)

    async def main() -> None:
        target = LocalTarget(state)
        with pytest.raises(LaunchFailed) as failed:
            await target.launch(spec)
        assert f"user {RUN_AS} cannot read its artifact directory" in failed.value.message
        assert "drwx------" in failed.value.message
        assert "chmod o+x" in (failed.value.hint or "")
        assert list((state / "instances").iterdir()) == []
        await target.close(stop_instances=True)

    asyncio.run(main())


def test_a_user_this_host_lacks_fails_the_launch(state_dir: Path) -> None:
    async def main() -> None:
        target = LocalTarget(state_dir)
        spec = dataclasses.replace(catalog_spec("c1"), run_as="no-such-user-xyz")
        with pytest.raises(LaunchFailed) as failed:
            await target.launch(spec)
        assert "there is no user 'no-such-user-xyz' on this host" in failed.value.message
        assert "useradd --system" in (failed.value.hint or "")
        assert "services.catalog.run_as" in (failed.value.hint or "")
        assert list((state_dir / "instances").iterdir()) == []
        await target.close(stop_instances=True)

    asyncio.run(main())


def test_a_server_that_is_not_root_cannot_start_an_instance_as_another_user(
    state_dir: Path,
) -> None:
    alice = User("alice", 4242, 4242, "alice", "/home/alice")

    async def main() -> None:
        target = LocalTarget(state_dir, server=alice)
        spec = dataclasses.replace(catalog_spec("c1"), run_as="root")
        with pytest.raises(LaunchFailed) as failed:
            await target.launch(spec)
        assert "the server cannot start it as 'root'" in failed.value.message
        assert "only root may start a process as another user" in failed.value.message
        assert "start the server as root" in (failed.value.hint or "")
        assert target.all_instances() == []
        await target.close(stop_instances=True)

    asyncio.run(main())


NOT_ROOT = """
import asyncio, dataclasses, json, sys
from pathlib import Path
from conveyor.runtime.local import LaunchFailed, LocalTarget
from conveyor.core.model import InstanceSpec

async def main():
    target = LocalTarget(Path(sys.argv[1]))
    spec = InstanceSpec("c1", "shop", "catalog", "dev", "v1", 1, "sha256:" + "0" * 64,
                        Path("/"), ("true",), {}, run_as="root")
    try:
        await target.launch(spec)
    except LaunchFailed as exc:
        print(json.dumps({"message": exc.message, "hint": exc.hint}))
    await target.close(stop_instances=True)

asyncio.run(main())
"""


@needs_run_as
def test_a_real_server_process_that_is_not_root_reports_launch_failed(project: Layout) -> None:
    """The same failure from a runtime that really runs as the unprivileged user."""
    user = the_user()
    state = project.root / "unprivileged-state"
    state.mkdir()
    os.chown(state, user.uid, user.gid)
    assert SYSTEM_PYTHON is not None
    done = subprocess.run(
        [SYSTEM_PYTHON, "-c", NOT_ROOT, str(state)],
        env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"},
        cwd="/",
        user=user.uid,
        group=user.gid,
        extra_groups=[],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    failed = json.loads(done.stdout)
    assert f"it runs as {RUN_AS} (uid {user.uid}), not root" in failed["message"]
    assert "start the server as root" in failed["hint"]
