"""LocalTarget with the example catalog service as the instance program: real processes."""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from pathlib import Path

import pytest

from conveyor.core.model import ProbeSpec
from conveyor.errors import Conflict
from conveyor.runtime.base import Target
from conveyor.runtime.local import LaunchFailed, LocalTarget, procfs, tail

from .conftest import catalog_spec, eventually, get

pytestmark = pytest.mark.integration


def test_launch_injects_environment_and_becomes_ready(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIRTUAL_ENV", "/leaky/venv")

    async def main() -> None:
        target: Target = LocalTarget(state_dir)
        await target.start()
        first = await target.launch(catalog_spec("c1", environment={"GREETING": "bonjour"}))
        assert (first.state, first.ready, first.restarts, first.host) == (
            "starting",
            False,
            0,
            "127.0.0.1",
        )
        assert first.pid is not None and first.port > 0
        await eventually(lambda: target.observe("catalog", "dev")[0].ready, what="ready")
        ready = target.observe("catalog", "dev")[0]
        assert (ready.state, ready.pid, ready.port, ready.ever_ready) == (
            "running",
            first.pid,
            first.port,
            True,
        )
        assert ready.last_probe is not None and ready.last_probe.detail == "200 OK"
        assert ready.consecutive_probe_failures == 0
        assert target.observe("catalog", "prod") == [] and target.observe("pricing", "dev") == []

        status, headers, body = await asyncio.to_thread(get, ready.port)
        assert status == 200
        assert json.loads(body)["greeting"] == "bonjour"
        assert json.loads(body)["instance"] == "c1"
        assert (headers["x-conveyor-version"], headers["x-conveyor-revision"]) == (
            "1.0.0-test",
            "7",
        )

        env = procfs.read_environ(ready.pid)  # the leader is the `sh -c` wrapper
        assert env is not None
        assert env["PORT"] == str(ready.port)
        assert (env["CONVEYOR_INSTANCE_ID"], env["CONVEYOR_PROJECT"]) == ("c1", "shop")
        assert env["CONVEYOR_STATE_DIR"] == str(state_dir)
        assert env["PYTHONUNBUFFERED"] == "1"
        assert "VIRTUAL_ENV" not in env

        assert ready.log_path is not None
        lines = tail(ready.log_path, 10)
        assert re.fullmatch(
            rf"--- started pid {ready.pid} port {ready.port} at \S+ \(restart 0\) ---", lines[0]
        )
        assert lines[1].startswith(
            f"catalog 1.0.0-test listening on 127.0.0.1:{ready.port} instance=c1 project=shop"
        )
        await target.close(stop_instances=True)
        assert not (state_dir / "instances" / "c1.json").exists()

    asyncio.run(main())


def test_a_tuple_command_is_execd_and_a_graceful_stop_lets_requests_finish(state_dir: Path) -> None:
    async def main() -> None:
        target = LocalTarget(state_dir)
        spec = catalog_spec(
            "c1",
            command=("python3", "app/server.py"),
            environment={"FAULT_LATENCY_MS": "700"},
            stop_grace=20,
        )
        launched = await target.launch(spec)
        assert launched.pid is not None
        await eventually(lambda: target.all_instances()[0].ready, what="ready")
        # no shell in between: the leader itself is the server
        cmdline = Path(f"/proc/{launched.pid}/cmdline").read_bytes().split(b"\0")
        assert cmdline[-2:] == [b"app/server.py", b""]

        in_flight = asyncio.create_task(asyncio.to_thread(get, launched.port))
        await asyncio.sleep(0.3)  # the request now sleeps inside the server
        began = time.monotonic()
        await target.stop("c1")
        stop_took = time.monotonic() - began
        status, _, body = await in_flight
        assert status == 200 and json.loads(body)["instance"] == "c1"
        assert target.all_instances() == []
        assert not (state_dir / "instances" / "c1.json").exists()
        assert stop_took < 15  # well under the 20 s grace: no SIGKILL was needed
        log = tail(state_dir / "logs" / "catalog" / "dev" / "c1.log", 5)
        assert "catalog stopped after draining" in log
        assert log[-1] == "--- stopped: exited with code 0 ---"
        await target.stop("c1")  # stopping again does nothing

    asyncio.run(main())


def test_stop_kills_the_whole_group_escalating_to_sigkill(state_dir: Path) -> None:
    async def main() -> None:
        target = LocalTarget(state_dir)
        # sh stays the leader (two commands); a background child ignores SIGTERM
        command = "(trap '' TERM; exec sleep 300) & python3 app/server.py; echo unreachable"
        launched = await target.launch(catalog_spec("c1", command=command, stop_grace=0.5))
        await eventually(lambda: target.all_instances()[0].ready, what="ready")
        assert launched.pid is not None
        members = procfs.group_members(launched.pid)
        assert len(members) >= 3  # sh, sleep, python
        stats = [s for s in map(procfs.read_stat, members) if s is not None]
        await target.stop("c1")
        assert all(not procfs.is_running(s.pid, s.start_ticks) for s in stats)
        log = tail(state_dir / "logs" / "catalog" / "dev" / "c1.log", 3)
        assert log[-1].endswith("(SIGKILL needed) ---")

    asyncio.run(main())


def test_a_crashing_instance_is_restarted_with_growing_backoff(state_dir: Path) -> None:
    async def main() -> None:
        target = LocalTarget(state_dir)
        launched = await target.launch(catalog_spec("c1", environment={"FAULT_CRASH_AFTER": "0.2"}))
        seen_states: set[str] = set()
        pids: set[int | None] = set()

        def restarted_twice() -> bool:
            obs = target.all_instances()[0]
            seen_states.add(obs.state)
            pids.add(obs.pid)
            return obs.restarts >= 2 and obs.state == "backoff"

        await eventually(restarted_twice, timeout=15, what="two restarts")
        obs = target.all_instances()[0]
        assert obs.last_exit_code == 3
        assert obs.port == launched.port  # the port is kept across restarts
        assert {"starting", "backoff"} <= seen_states
        assert len(pids - {None}) >= 2  # each restart is a new process
        text = (state_dir / "logs" / "catalog" / "dev" / "c1.log").read_text()
        exits = re.findall(
            r"--- exited with code 3 after [\d.]+s; restarting in ([\d.]+)s ---", text
        )
        assert exits[:2] == ["0.5", "1"]
        starts = re.findall(r"--- started pid \d+ port (\d+) at \S+ \(restart (\d+)\) ---", text)
        assert starts[:3] == [
            (str(launched.port), "0"),
            (str(launched.port), "1"),
            (str(launched.port), "2"),
        ]
        record = json.loads((state_dir / "instances" / "c1.json").read_text())
        assert record["restarts"] == obs.restarts
        await target.close(stop_instances=True)

    asyncio.run(main())


def test_failing_readiness_never_becomes_ready_and_says_why(state_dir: Path) -> None:
    async def main() -> None:
        target = LocalTarget(state_dir)
        await target.launch(catalog_spec("c1", environment={"FAULT_READINESS": "fail"}))
        await eventually(
            lambda: target.all_instances()[0].consecutive_probe_failures >= 5, what="5 failures"
        )
        obs = target.all_instances()[0]
        assert (obs.ready, obs.ever_ready, obs.state, obs.restarts) == (False, False, "starting", 0)
        assert obs.last_probe is not None
        assert obs.last_probe.detail.startswith("503 Service Unavailable: ")
        assert "readiness fault injected" in obs.last_probe.detail
        assert len(obs.last_probe.detail) <= len("503 Service Unavailable: ") + 80
        assert 5 <= len(obs.recent_probes) <= 10
        assert obs.recent_probes[-1] == obs.last_probe
        await target.close(stop_instances=True)

    asyncio.run(main())


def test_failing_liveness_kills_and_restarts(state_dir: Path) -> None:
    async def main() -> None:
        target = LocalTarget(state_dir)
        # /health/ready as liveness path: FAULT_READINESS makes it fail once the server is up
        liveness = ProbeSpec(
            "/health/ready", timeout=1, period=0.1, failure_threshold=3, initial_delay=0.5
        )
        launched = await target.launch(
            catalog_spec(
                "c1",
                environment={"FAULT_READINESS": "fail"},
                readiness=None,
                liveness=liveness,
                stop_grace=5,
            )
        )
        log = state_dir / "logs" / "catalog" / "dev" / "c1.log"
        failed = "--- liveness probe failed 3 in a row, last: 503 Service Unavailable"
        await eventually(lambda: failed in log.read_text(), timeout=15, what="a liveness kill")
        await eventually(lambda: target.all_instances()[0].restarts >= 1, what="a restart")
        obs = target.all_instances()[0]
        assert obs.pid != launched.pid
        text = log.read_text()
        assert "catalog stopped after draining" in text  # liveness kills gracefully first
        assert any(p.detail.startswith("liveness: 503") for p in obs.recent_probes)
        await target.close(stop_instances=True)

    asyncio.run(main())


def test_without_a_readiness_probe_an_open_port_means_ready(state_dir: Path) -> None:
    async def main() -> None:
        target = LocalTarget(state_dir)
        await target.launch(
            catalog_spec("c1", readiness=None, environment={"FAULT_READINESS": "fail"})
        )
        await eventually(lambda: target.all_instances()[0].ready, what="ready")
        probe = target.all_instances()[0].last_probe
        assert probe is not None and probe.detail == "port open"
        await target.close(stop_instances=True)

    asyncio.run(main())


def test_launch_refusals(state_dir: Path, tmp_path: Path) -> None:
    async def main() -> None:
        target = LocalTarget(state_dir)
        with pytest.raises(LaunchFailed) as missing_dir:
            await target.launch(catalog_spec("c1", artifact_dir=tmp_path / "gone"))
        assert "does not exist" in missing_dir.value.message and missing_dir.value.hint
        with pytest.raises(LaunchFailed) as missing_program:
            await target.launch(catalog_spec("c2", command=("no-such-program-xyz",)))
        assert "no-such-program-xyz" in missing_program.value.message
        assert "run:" in (missing_program.value.hint or "")
        assert list((state_dir / "instances").iterdir()) == []
        with pytest.raises(ValueError, match="file name"):
            await target.launch(catalog_spec("../escape"))
        await target.launch(catalog_spec("c3", readiness=None))
        with pytest.raises(Conflict):
            await target.launch(catalog_spec("c3"))
        await target.close(stop_instances=True)

    asyncio.run(main())


def test_logs_of_all_instances_and_close_stops_everything(state_dir: Path) -> None:
    async def main() -> None:
        target = LocalTarget(state_dir)
        a = await target.launch(catalog_spec("c1"))
        b = await target.launch(catalog_spec("c2"))
        other = await target.launch(catalog_spec("c3", env="prod"))
        assert len({a.port, b.port, other.port}) == 3
        await eventually(lambda: all(o.ready for o in target.all_instances()), what="all ready")
        assert {p.name for p in target.log_files("catalog", "dev")} == {"c1.log", "c2.log"}
        pids = [o.pid for o in target.all_instances()]
        await target.stop_all()
        assert target.all_instances() == []
        assert all(pid is not None and procfs.read_stat(pid) is None for pid in pids)
        assert list((state_dir / "instances").iterdir()) == []
        # logs outlive their instances
        assert {p.name for p in target.log_files("catalog", "prod")} == {"c3.log"}

    asyncio.run(main())
    assert os.listdir(state_dir / "instances") == []
