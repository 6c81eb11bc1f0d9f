"""SIGKILL the server at many points of a rollout; the restarted server must converge.

"Converge" means: the release ends succeeded (or rolled back, for a bad version), exactly the
desired instances of exactly one version run, no orphaned process is left, and the stable
address answers from that version. Kill points are ledger events: the test watches the
release's events and kills the server the moment the chosen one is committed, so every
interesting gap (instances started but not ready, traffic half shifted, old version draining,
verification running, rollback under way) is hit on purpose rather than by luck.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from conveyor.cli.demo import LoadThread
from tests.controller.harness import write_project

from .server_process import ServerProcess, build, project_processes

pytestmark = pytest.mark.integration

CASES = [
    ("staging", "instances.started", None, "succeeded"),
    ("staging", "instance.ready", None, "succeeded"),
    ("staging", "instances.stopped", None, "succeeded"),
    ("staging", "verification.started", None, "succeeded"),
    ("production", "instances.started", None, "succeeded"),
    ("production", "traffic.switched", None, "succeeded"),
    ("production", "release.aborted", {"FAULT_ERROR_RATE": "0.6"}, "rolled_back"),
    ("production", "rollback.started", {"FAULT_CRASH_AFTER": "1"}, "rolled_back"),
]


def _wait_for_event(server: ServerProcess, release_id: int, kind: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = server.get("/api/v1/events", release=release_id)["events"]
        if any(e["kind"] == kind for e in events):
            return
        time.sleep(0.02)
    raise AssertionError(f"event {kind} never happened: {[e['kind'] for e in events]}")


def _wait_final(server: ServerProcess, release_id: int, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        release = server.get(f"/api/v1/releases/{release_id}")
        if release["phase"] in ("succeeded", "rolled_back", "failed") and (
            release["done"] or release["phase"] != "succeeded" or release["env"] != "production"
        ):
            return release
        time.sleep(0.1)
    raise AssertionError(
        f"release {release_id} did not finish: {release['phase']} {release['status']}"
    )


def _described(pids: list[int]) -> list[str]:
    """Each process as pid, instance tag and command line: which instance an extra one is."""
    out = []
    for pid in pids:
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        tags = [e.decode(errors="replace") for e in environ if e.startswith(b"CONVEYOR_INSTANCE")]
        out.append(f"{pid} ppid={stat[1]} {tags} {cmdline.decode(errors='replace')[:80]}")
    return out


def _port(server: ServerProcess, env: str) -> int:
    row = server.get("/api/v1/status", env=env)["services"][0]
    return int(row["address"].rsplit(":", 1)[1])


@pytest.mark.parametrize(
    ("env", "kill_after", "fault", "expected"), CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES]
)
def test_sigkill_mid_rollout_converges(
    tmp_path: Path, env: str, kill_after: str, fault: dict | None, expected: str
) -> None:
    write_project(
        tmp_path,
        instances=2,
        verification="5s",
        deadline="10s",
        scale_down_delay="1s",
        project="crashtest",
    )
    server = ServerProcess(tmp_path)
    try:
        server.start()
        v1 = build(tmp_path)  # the CLI hands the artifact to the server
        r1 = server.post("/api/v1/releases", {"service": "catalog", "env": env, "artifact": v1})
        assert _wait_final(server, r1["id"])["phase"] == "succeeded"
        # Users keep calling through the stable address (the error-rate trigger needs them).
        load = LoadThread(_port(server, env), rate=100)
        load.start()
        (tmp_path / "services" / "catalog" / "VERSION").write_text("v2\n")
        v2 = build(tmp_path)
        r2 = server.post(
            "/api/v1/releases",
            {"service": "catalog", "env": env, "artifact": v2, "set": fault or {}},
        )
        _wait_for_event(server, r2["id"], kill_after)
        server.kill()
        survivors = project_processes(tmp_path)
        assert survivors, "instances must outlive a killed server"
        server.start()
        final = _wait_final(server, r2["id"])
        load.stop()
        assert final["phase"] == expected, final["status"]
        want_revision = 2 if expected == "succeeded" else 1
        # Converged: desired instances of one version, no orphans, address serving it.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            rows = [r for r in server.get("/api/v1/status", env=env)["services"]]
            instances = rows[0]["instances"]
            if (
                len(instances) == 2
                and {i["revision"] for i in instances} == {want_revision}
                and all(i["ready"] for i in instances)
                and len(project_processes(tmp_path)) == 2
            ):
                break
            time.sleep(0.1)
        else:
            raise AssertionError(
                f"did not converge: {instances} procs={_described(project_processes(tmp_path))}"
            )
        answer = httpx.get(rows[0]["address"] + "/", timeout=5)
        assert answer.status_code == 200
        assert answer.headers["x-conveyor-revision"] == str(want_revision)
        check = server.get("/api/v1/events")["events"]
        assert check
    finally:
        server.down()
    assert project_processes(tmp_path) == [], "`conveyor down` must stop every instance"
