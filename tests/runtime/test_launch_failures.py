"""Every launch failure fails one instance cleanly: an error, no record, no process, no crash.

Real processes and a real state dir. A launch that cannot start raises ``LaunchFailed`` with
a reason and a fix, leaves no instance record behind (so a restarted server has nothing
broken to adopt) and notes the reason in the instance's log. A record that cannot be
adopted (corrupt, or written with an environment no process could have) is set aside with
a warning while the other instances are adopted as usual.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from pathlib import Path

import pytest

from conveyor.core.model import SecretRef
from conveyor.runtime.local import LaunchFailed, LocalTarget, procfs, tail
from conveyor.runtime.local.records import InstanceRecord, RecordStore
from conveyor.runtime.local.supervisor import InstanceSupervisor

from .conftest import catalog_spec, eventually

pytestmark = pytest.mark.integration


def records(state_dir: Path) -> list[str]:
    return sorted(p.name for p in (state_dir / "instances").iterdir())


@pytest.mark.parametrize(
    ("spec_changes", "needle", "hint"),
    [
        ({"environment": {"A=B": "x"}}, "config key 'A=B' is not usable", "letters, digits"),
        ({"environment": {"GREETING": "a\x00b"}}, "GREETING contains a NUL", "NUL"),
        (
            {"command": ("no-such-program-xyz",)},
            "'no-such-program-xyz' is not an executable",
            "run:",
        ),
        ({"command": ("./missing.sh",)}, "'./missing.sh' is not an executable file in", "run:"),
        (
            {"secrets": {"DB_PASSWORD": SecretRef("env", "CONVEYOR_TEST_UNSET_SECRET")}},
            "secret DB_PASSWORD reads $CONVEYOR_TEST_UNSET_SECRET from the server's environment",
            "export CONVEYOR_TEST_UNSET_SECRET",
        ),
        (
            {"secrets": {"DB_PASSWORD": SecretRef("file", "/nonexistent/conveyor/secret")}},
            "secret DB_PASSWORD reads the file /nonexistent/conveyor/secret",
            "create /nonexistent/conveyor/secret",
        ),
    ],
    ids=["equals-in-name", "nul-in-value", "missing-program", "missing-file", "unset", "no-file"],
)
def test_a_launch_that_cannot_start_fails_cleanly(
    state_dir: Path, spec_changes: dict[str, object], needle: str, hint: str
) -> None:
    async def main() -> None:
        target = LocalTarget(state_dir)
        spec = catalog_spec("c1")
        spec = type(spec)(**{**spec.__dict__, **spec_changes})
        with pytest.raises(LaunchFailed) as failed:
            await target.launch(spec)
        assert failed.value.message.startswith("cannot start catalog instance c1: ")
        assert needle in failed.value.message
        assert hint in (failed.value.hint or "")
        assert records(state_dir) == []
        assert target.all_instances() == []
        log = state_dir / "logs" / "catalog" / "dev" / "c1.log"
        assert needle in "\n".join(tail(log, 5))  # `conveyor logs` can explain it later
        # The target is still fine: the next launch works.
        await target.launch(catalog_spec("c2"))
        await eventually(lambda: target.observe("catalog", "dev")[0].ready, what="ready")
        await target.close(stop_instances=True)

    asyncio.run(main())


def test_an_unreadable_artifact_directory_fails_the_launch(state_dir: Path, tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads every directory; run the tests as an ordinary user")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o000)

    async def main() -> None:
        target = LocalTarget(state_dir)
        with pytest.raises(LaunchFailed, match="is not readable"):
            await target.launch(catalog_spec("c1", artifact_dir=locked))
        assert records(state_dir) == []

    try:
        asyncio.run(main())
    finally:
        locked.chmod(0o700)


def test_adoption_sets_aside_corrupt_and_impossible_records(
    state_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        first = LocalTarget(state_dir)
        await first.launch(catalog_spec("good"))
        await eventually(lambda: first.all_instances()[0].ready, what="ready")
        await first.close(stop_instances=False)

        instances = state_dir / "instances"
        (instances / "garbage.json").write_text("{not json")
        # A record written before launches were checked: a name the kernel cannot hold.
        bad = InstanceRecord(catalog_spec("bad", environment={"A=B": "x"}), port=1)
        (instances / "bad.json").write_text(json.dumps(bad.to_json()))

        second = LocalTarget(state_dir)
        with caplog.at_level(logging.WARNING, logger="conveyor.runtime.local.records"):
            await second.start()
        assert [o.instance_id for o in second.all_instances()] == ["good"]
        assert records(state_dir) == ["bad.corrupt", "garbage.corrupt", "good.json"]
        warned = " ".join(r.getMessage() for r in caplog.records)
        assert "garbage.json is unreadable" in warned and "bad.json is unreadable" in warned
        # ... and a third start finds nothing in its way.
        await second.close(stop_instances=False)
        third = LocalTarget(state_dir)
        await third.start()
        assert [o.instance_id for o in third.all_instances()] == ["good"]
        await third.close(stop_instances=True)

    asyncio.run(main())


def test_a_live_instance_that_cannot_be_adopted_is_stopped_not_orphaned(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Set aside, its process must go too: nothing else would ever stop it, and it would
    keep its port and answer beside the instance the controller starts in its place."""

    async def main() -> None:
        first = LocalTarget(state_dir)
        await first.launch(catalog_spec("stuck"))
        await first.launch(catalog_spec("fine"))
        await eventually(lambda: all(o.ready for o in first.all_instances()), what="ready")
        pids = {o.instance_id: o.pid for o in first.all_instances()}
        await first.close(stop_instances=False)

        real_adopt = InstanceSupervisor.adopt

        def adopt(self: InstanceSupervisor, ref: object, *, respawn_is_restart: bool) -> None:
            if self.id == "stuck":
                raise OSError("injected: the supervisor cannot take it over")
            real_adopt(self, ref, respawn_is_restart=respawn_is_restart)  # type: ignore[arg-type]

        monkeypatch.setattr(InstanceSupervisor, "adopt", adopt)
        second = LocalTarget(state_dir)
        await second.start()
        assert [o.instance_id for o in second.all_instances()] == ["fine"]
        assert records(state_dir) == ["fine.json", "stuck.corrupt"]
        try:
            tagged = procfs.scan_tagged(str(state_dir))
            assert {p.instance_id for p in tagged} == {"fine"}  # the set-aside one was stopped
            assert pids["fine"] in {p.pid for p in tagged}  # the other one kept running
        finally:
            await second.close(stop_instances=True)

    asyncio.run(main())


def test_a_respawn_that_cannot_start_is_failed_not_fatal(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The previous server died; the instance's process too; its secret is now gone."""
    monkeypatch.setenv("CONVEYOR_TEST_SECRET", "s3cr3t-value")
    secret = {"TOKEN": SecretRef("env", "CONVEYOR_TEST_SECRET")}

    async def main() -> None:
        first = LocalTarget(state_dir)
        launched = await first.launch(catalog_spec("c1", secrets=secret))
        await eventually(lambda: first.all_instances()[0].ready, what="ready")
        await first.close(stop_instances=False)
        pid = launched.pid
        assert pid is not None
        os.killpg(pid, signal.SIGKILL)
        await eventually(lambda: (s := procfs.read_stat(pid)) is None or s.exited, what="gone")

        monkeypatch.delenv("CONVEYOR_TEST_SECRET")
        second = LocalTarget(state_dir)
        await second.start()
        [instance] = second.all_instances()
        assert instance.state == "failed" and instance.pid is None
        log = "\n".join(tail(state_dir / "logs" / "catalog" / "dev" / "c1.log", 10))
        assert "secret TOKEN reads $CONVEYOR_TEST_SECRET" in log
        assert "s3cr3t-value" not in log
        await second.close(stop_instances=True)
        assert records(state_dir) == []

    asyncio.run(main())


def test_records_hold_secret_references_not_values(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVEYOR_TEST_SECRET", "s3cr3t-value")

    async def main() -> None:
        target = LocalTarget(state_dir)
        spec = catalog_spec("c1", secrets={"TOKEN": SecretRef("env", "CONVEYOR_TEST_SECRET")})
        await target.launch(spec)
        stored = RecordStore(state_dir / "instances").load_all()
        assert stored[0].spec.secrets == spec.secrets
        text = (state_dir / "instances" / "c1.json").read_text()
        assert "CONVEYOR_TEST_SECRET" in text and "s3cr3t-value" not in text
        await target.close(stop_instances=True)

    asyncio.run(main())
