"""The data plane outlives the control plane: users notice no server crash, stop or upgrade.

Real `conveyor server` processes, the real router process and HAProxy, real instances, and
users calling every environment's stable address at a steady rate throughout. The server is
SIGKILLed, then stopped (SIGTERM) and replaced, each time in the middle of rolling,
blue-green and canary releases running at once (and a canary behind HAProxy); the next
server adopts the routers and the instances. What must hold: not one failed request, every
release converges, exactly the desired instances run (no orphan, no duplicate), and both
routers were adopted, never restarted.

A few representative points only (the suite's time is precious); `bench/control_plane_bench.py`
runs the whole matrix (each strategy, several kill points, both routers).
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import pytest

from conveyor.cli.demo import LoadThread
from tests.controller.harness import write_project
from tests.traffic_haproxy._support import needs_haproxy

from .server_process import ServerProcess, build, project_processes, router_pid

pytestmark = [pytest.mark.integration, needs_haproxy]

PROJECT = "dataplane"
ENVS = ("staging", "production", "canary", "haproxy")  # rolling, blue-green, canary x2
STEPS = "[{set_weight: 20}, {pause: 1s}, {set_weight: 50}, {pause: 1s}]"


def _project(root: Path) -> None:
    write_project(
        root,
        instances=2,
        verification="1s",
        deadline="20s",
        scale_down_delay="1s",
        project=PROJECT,
        canary_steps=STEPS,
    )


def _port(server: ServerProcess, env: str) -> int:
    row = server.get("/api/v1/status", env=env)["services"][0]
    return int(row["address"].rsplit(":", 1)[1])


def _deploy(server: ServerProcess, env: str, artifact: str) -> int:
    body = {"service": "catalog", "env": env, "artifact": artifact}
    return int(server.post("/api/v1/releases", body)["id"])


def _wait_converged(
    server: ServerProcess, releases: dict[str, int], revision: int, timeout: float = 60
) -> None:
    """Every release succeeded and done; each environment runs exactly 2 ready instances of
    ``revision``; the host runs exactly those processes."""
    deadline = time.monotonic() + timeout
    state: Any = None
    while time.monotonic() < deadline:
        state = {}
        for env, release_id in releases.items():
            release = server.get(f"/api/v1/releases/{release_id}")
            rows = server.get("/api/v1/status", env=env)["services"]
            instances = rows[0]["instances"] if rows else []
            state[env] = (release["phase"], release["done"], instances)
        if all(
            phase == "succeeded"
            and done
            and len(instances) == 2
            and {i["revision"] for i in instances} == {revision}
            and all(i["ready"] for i in instances)
            for phase, done, instances in state.values()
        ) and len(project_processes(server.root)) == 2 * len(releases):
            return
        time.sleep(0.2)
    raise AssertionError(f"did not converge: {state} procs={project_processes(server.root)}")


def _wait_for_event(server: ServerProcess, release_id: int, kind: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(
            e["kind"] == kind for e in server.get("/api/v1/events", release=release_id)["events"]
        ):
            return
        time.sleep(0.02)
    raise AssertionError(f"event {kind} never happened for release {release_id}")


def _promote(server: ServerProcess, release_id: int) -> None:
    """The haproxy environment's canary pauses until promoted (the others do not)."""
    body = {"service": "catalog", "env": "haproxy", "action": "promote"}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.get(f"/api/v1/releases/{release_id}")["phase"] not in ("pending", "progressing"):
            return
        with contextlib.suppress(AssertionError):  # not paused yet
            server.post("/api/v1/control", body)
        time.sleep(0.3)
    raise AssertionError(f"release {release_id} was never promoted")


def _haproxy_master(root: Path) -> str:
    return (root / ".conveyor" / "routers" / "haproxy" / "haproxy.pid").read_text()


def _failures(loads: dict[str, LoadThread], marks: dict[str, float]) -> dict[str, Any]:
    """Per environment: sent, failed, errors, and when failures happened relative to the
    test's marks (a failing run says in which phase users were hurt)."""
    reports = {env: load.stop() for env, load in loads.items()}
    return {
        env: (
            r.sent,
            r.failed,
            r.errors,
            sorted({min(marks, key=lambda m: abs(marks[m] - at)) for at in r.failures_at}),
            [round(at - marks["start"], 2) for at in r.failures_at[:3]],
        )
        for env, r in reports.items()
    }


def test_users_notice_no_server_kill_stop_or_upgrade(tmp_path: Path) -> None:
    _project(tmp_path)
    server = ServerProcess(tmp_path)
    loads: dict[str, LoadThread] = {}
    marks: dict[str, float] = {}
    try:
        server.start()
        v1 = build(tmp_path)
        first = {env: _deploy(server, env, v1) for env in ENVS}
        _promote(server, first["haproxy"])
        _wait_converged(server, first, 1)
        router, master = router_pid(tmp_path), _haproxy_master(tmp_path)
        assert router is not None
        for env in ENVS:
            loads[env] = LoadThread(_port(server, env), rate=60)
            loads[env].start()
        marks["start"] = time.time()

        # 1. SIGKILL in the middle of three releases (new instances started everywhere).
        (tmp_path / "services" / "catalog" / "VERSION").write_text("v2\n")
        v2 = build(tmp_path)
        second = {env: _deploy(server, env, v2) for env in ENVS}
        _wait_for_event(server, second["canary"], "traffic.shifted")
        marks["kill"] = time.time()
        server.kill()
        instances = set(project_processes(tmp_path))
        time.sleep(1.0)  # users are served with no server at all
        # The instances keep running (one the old server had just told to stop may finish
        # stopping), and nothing starts any.
        left = set(project_processes(tmp_path))
        assert left <= instances and len(left) >= 2 * len(ENVS), (instances, left)
        marks["restart after kill"] = time.time()
        server.start()
        _promote(server, second["haproxy"])
        _wait_converged(server, second, 2)
        marks["converged 2"] = time.time()
        assert router_pid(tmp_path) == router, "the router must be adopted, not restarted"
        assert _haproxy_master(tmp_path) == master, "HAProxy too"

        # 2. Upgrade: the server stopped gracefully (SIGTERM) mid-release and replaced.
        (tmp_path / "services" / "catalog" / "VERSION").write_text("v3\n")
        v3 = build(tmp_path)
        third = {env: _deploy(server, env, v3) for env in ENVS}
        _wait_for_event(server, third["production"], "instances.started")
        marks["sigterm"] = time.time()
        server.stop()
        assert project_processes(tmp_path), "stopping the server leaves the instances running"
        assert router_pid(tmp_path) == router, "... and the router"
        marks["restart after stop"] = time.time()
        server.start()
        _promote(server, third["haproxy"])
        _wait_converged(server, third, 3)
        marks["converged 3"] = time.time()
        assert router_pid(tmp_path) == router
        assert _haproxy_master(tmp_path) == master

        time.sleep(1.0)  # a last second of traffic on the converged versions
        failures = _failures(loads, marks)
        loads.clear()
        for env, (sent, failed, *why) in failures.items():
            assert sent > 300, (env, sent)
            assert failed == 0, (env, failed, why)
    finally:
        for load in loads.values():
            load.stop()
        stopped = server.down()
    assert stopped["stopped_routers"] == [f"builtin {router}", f"haproxy {master.strip()}"]
    assert project_processes(tmp_path) == []
    assert router_pid(tmp_path) is None
