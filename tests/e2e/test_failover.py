"""Two real servers on one PostgreSQL: one drives, the other takes over when it dies.

- SIGKILL the leader mid-canary: the standby takes the environment's lease (a new epoch,
  on the ledger) within the documented time, resumes the canary where it stood, and it
  converges: succeeded, exactly the desired instances of the new version, the stable
  address serving it, every canary step on the ledger once, the chain verifying.
- SIGSTOP the leader mid-canary: the standby takes over; SIGCONT the old leader: it finds
  its lease gone, stops driving (its fenced writes would be refused), lets go of the
  port, never starts or restarts an instance, and the release converges the same way.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from conveyor.core.leases import RENEW_EVERY, TTL, Fence
from conveyor.errors import Fenced
from conveyor.layout import Layout
from conveyor.server.daemon import stop_everything
from conveyor.store import NewEvent, Store
from tests.controller.harness import write_project

from .server_process import ServerProcess, build, project_processes

pytestmark = pytest.mark.integration

ENV = "canary"
TAKEOVER_BOUND = TTL + 2 * RENEW_EVERY + 3.0
"""Generous bound for the test (the target, measured by bench/failover.py, is <= 5 s)."""


@pytest.fixture
def pg_url() -> Iterator[str]:
    base = os.environ.get("CONVEYOR_TEST_DATABASE_URL", "")
    if not base.startswith("postgresql"):
        pytest.skip(
            "needs PostgreSQL: set CONVEYOR_TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test"
        )
    if base.startswith("postgresql://"):
        base = "postgresql+psycopg://" + base.removeprefix("postgresql://")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(base)
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in base else "?"
    yield f"{base}{sep}options=-csearch_path%3D{schema}"
    with engine.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    engine.dispose()


@pytest.fixture
def project() -> Iterator[str]:
    """A project name of its own, and no instance of it left behind: servers sharing a
    store leave the instances to each other when stopped, so the test stops them."""
    name = f"failover{uuid.uuid4().hex[:6]}"
    yield name
    for pid in project_processes(name):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _servers(root: Path, url: str) -> tuple[ServerProcess, ServerProcess]:
    env = {"CONVEYOR_DATABASE_URL": url}
    first = ServerProcess(root, env, log_name="server-a.log")
    second = ServerProcess(root, env, log_name="server-b.log")
    first.start()
    second.start()
    return first, second


def _leader(server: ServerProcess, env: str) -> dict[str, Any]:
    leases = {row["env"]: row for row in server.get("/api/v1/leases")["leases"]}
    return leases[env]


def _wait(what: str, check: Any, timeout: float = 30, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def _release(server: ServerProcess, release_id: int) -> dict[str, Any]:
    return server.get(f"/api/v1/releases/{release_id}")  # type: ignore[no-any-return]


def _deploy_v2_to_mid_canary(
    root: Path, a: ServerProcess, b: ServerProcess
) -> tuple[int, ServerProcess, ServerProcess]:
    """r1 succeeded, r2 in its first pause at 20%: returns r2's id, the leader, the standby."""
    v1 = build(root)
    r1 = b.post("/api/v1/releases", {"service": "catalog", "env": ENV, "artifact": v1})
    _wait("r1", lambda: _release(a, r1["id"])["phase"] == "succeeded", timeout=40)
    (root / "services" / "catalog" / "VERSION").write_text("v2\n")
    v2 = build(root)
    r2 = b.post("/api/v1/releases", {"service": "catalog", "env": ENV, "artifact": v2})
    _wait(
        "r2 at 20%",
        lambda: _release(a, r2["id"])["status"].get("weights", {}).get(r2["template"]) == 20,
    )
    holder = _leader(a, ENV)
    leader, standby = (a, b) if str(a.process.pid) in holder["holder"].split(":") else (b, a)  # type: ignore[union-attr]
    return r2["id"], leader, standby


def _converged(server: ServerProcess, release_id: int, project: str) -> None:
    final = _wait(
        "r2 to finish",
        lambda: (r := _release(server, release_id))["done"] and r,
        timeout=40,
        every=0.2,
    )
    assert final["phase"] == "succeeded", final["status"]

    def settled() -> bool:
        rows = server.get("/api/v1/status", env=ENV)["services"]
        instances = rows[0]["instances"]
        return (
            len(instances) == 2
            and {i["revision"] for i in instances} == {2}
            and all(i["ready"] for i in instances)
            and len(project_processes(project)) == 2
        )

    try:
        _wait("two ready instances of r2 and no other process", settled, timeout=20, every=0.2)
    except AssertionError:
        rows = server.get("/api/v1/status", env=ENV)["services"]
        raise AssertionError(
            f"not converged: {rows[0]['instances']}, processes {project_processes(project)}"
        ) from None


def _ledger_checks(server: ServerProcess, release_id: int) -> list[dict[str, Any]]:
    assert server.get("/api/v1/ledger/verify", full="1")["ok"] is True
    events = server.get("/api/v1/events", release=release_id, limit=500)["events"]
    shifted = [e["details"]["canary_percent"] for e in events if e["kind"] == "traffic.shifted"]
    assert shifted == sorted(set(shifted)), f"a canary step ran twice: {shifted}"
    started = [e["details"]["index"] for e in events if e["kind"] == "step.started"]
    assert started == sorted(set(started)), f"a step started twice: {started}"
    in_env = server.get("/api/v1/events", env=ENV, limit=5000)["events"]
    return [e for e in in_env if e["kind"] == "lease.acquired"]


def test_standby_resumes_a_canary_after_the_leader_is_killed(
    tmp_path: Path, pg_url: str, project: str
) -> None:
    write_project(
        tmp_path,
        project=project,
        canary_steps="[{set_weight: 20}, {pause: 3s}, {set_weight: 50}, {pause: 1s}]",
        scale_down_delay="1s",
    )
    a, b = _servers(tmp_path, pg_url)
    try:
        release_id, leader, standby = _deploy_v2_to_mid_canary(tmp_path, a, b)
        epoch = _leader(standby, ENV)["epoch"]
        leader.kill()
        killed = time.monotonic()
        took = _wait(
            "the standby to take the lease",
            lambda: (row := _leader(standby, ENV))["this_server"] and row,
            timeout=TAKEOVER_BOUND,
        )
        assert time.monotonic() - killed <= TAKEOVER_BOUND
        assert took["epoch"] == epoch + 1
        # the CLI finds a server again: the survivor names itself in .conveyor/server.json
        published = tmp_path / ".conveyor" / "server.json"
        _wait(
            "the standby to publish itself",
            lambda: json.loads(published.read_text())["pid"] == standby.process.pid,  # type: ignore[union-attr]
            timeout=10,
        )
        _converged(standby, release_id, project)
        leases = _ledger_checks(standby, release_id)
        assert [e["details"]["epoch"] for e in leases][-1] == epoch + 1
        address = standby.get("/api/v1/status", env=ENV)["services"][0]["address"]
        assert httpx.get(address + "/", timeout=5).headers["x-conveyor-revision"] == "2"
    finally:
        for server in (a, b):
            server.stop()
        stop_everything(Layout(tmp_path))  # the router and instances outlive the servers


def test_a_paused_leader_is_fenced_when_it_wakes(tmp_path: Path, pg_url: str, project: str) -> None:
    write_project(
        tmp_path,
        project=project,
        canary_steps="[{set_weight: 20}, {pause: 2s}, {set_weight: 50}, {pause: 2s}]",
        scale_down_delay="1s",
    )
    a, b = _servers(tmp_path, pg_url)
    try:
        release_id, leader, standby = _deploy_v2_to_mid_canary(tmp_path, a, b)
        old = _leader(standby, ENV)
        assert leader.process is not None
        leader.process.send_signal(signal.SIGSTOP)
        try:
            _wait(
                "the standby to take the lease",
                lambda: _leader(standby, ENV)["this_server"],
                timeout=TAKEOVER_BOUND,
            )
            # the standby drives on while the old leader sleeps
            _wait(
                "the canary to move on",
                lambda: _release(standby, release_id)["status"].get("step_index", 0) >= 2,
                timeout=20,
            )
        finally:
            leader.process.send_signal(signal.SIGCONT)
        _wait(
            "the old leader to stop driving",
            lambda: f"stops driving environment {ENV}" in leader.log_tail(),
            timeout=10,
        )
        assert leader.process.poll() is None, "the old leader keeps answering the API"
        _converged(standby, release_id, project)
        # any server answers reads (live instance details come from the one driving)
        assert _release(leader, release_id)["phase"] == "succeeded"
        leases = _ledger_checks(leader, release_id)
        assert [e["details"]["epoch"] for e in leases][-1] == old["epoch"] + 1
        assert _leader(leader, ENV)["holder"] != old["holder"]
        # The old leader, a standby now, takes a deploy and then a rollback of it: both go
        # through the store, and the leader carries them out.
        (tmp_path / "services" / "catalog" / "VERSION").write_text("v3\n")
        r3 = leader.post(
            "/api/v1/releases", {"service": "catalog", "env": ENV, "artifact": build(tmp_path)}
        )
        # Well within an idle driver's 30 s look: the leader's lease round nudges it.
        _wait(
            "r3 at 20%",
            lambda: (
                _release(leader, r3["id"])["status"].get("weights", {}).get(r3["template"]) == 20
            ),
            timeout=10,
        )
        leader.post("/api/v1/rollback", {"service": "catalog", "env": ENV})
        _wait(
            "r3 rolled back by the leader",
            lambda: _release(leader, r3["id"])["phase"] == "rolled_back",
            timeout=30,
        )
        kinds = [e["kind"] for e in leader.get("/api/v1/events", release=r3["id"])["events"]]
        assert kinds.index("rollback.requested") < kinds.index("release.aborted")
        # What the old leader would write with its fence is refused by the store.
        with Store.open(pg_url) as store, pytest.raises(Fenced):
            store.append_events(
                [NewEvent("instances.restored", {}, env=ENV)],
                actor="conveyor",
                fence=Fence(ENV, old["holder"], old["epoch"]),
            )
            assert store.verify_ledger().ok
    finally:
        for server in (a, b):
            server.stop()
        stop_everything(Layout(tmp_path))  # the router and instances outlive the servers
