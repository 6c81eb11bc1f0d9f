"""Failover time: two real servers on one PostgreSQL, the leader SIGKILLed mid-canary.

Run: CONVEYOR_TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test \\
     .venv/bin/python bench/failover.py [--runs 5]

Each run starts from an empty PostgreSQL schema and a fresh project: two `conveyor server`
processes, a canary release of v1, then v2 held at 20% by an indefinite pause. The leader
(whoever holds the environment's lease) is SIGKILLed and, at once, the canary is promoted
through the standby's API (a state change any server accepts; the lease holder acts on it).
Measured from the kill, by the wall clock the servers' ledger uses:

  (a) lease: the standby's ``lease.acquired`` event (epoch bumped);
  (b) drives: the standby's first committed step of the release (``traffic.shifted`` to
      100%), i.e. the rollout resumed where it stood;
  (c) serves: the first request answered 200 through the environment's stable address
      (the built-in router lives in the server process, so users wait for the new leader
      to listen; a router in its own process removes that gap).

The reference, measured in the same run (interleaved with the standby runs): one server on
SQLite, killed at the same point and started again at once (what a process supervisor with
an instant restart gives a single server; its lease is taken at once, exclusively). Also
printed: each standby figure against the design bound ``TTL + RENEW_EVERY`` (a lease
renewed just before the kill expires after TTL; the standby claims at most one renewal
period later). Medians over the runs. Raw runs go to bench/results/failover.json (gitignored).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.controller.harness import write_project  # noqa: E402
from tests.e2e.server_process import ServerProcess, build, project_processes  # noqa: E402

from conveyor.core.leases import RENEW_EVERY, TTL  # noqa: E402

RESULTS = REPO / "bench" / "results"
ENV = "canary"
STEPS = "[{set_weight: 20}, {pause: {}}, {set_weight: 100}]"


def _schema(base: str) -> tuple[str, sa.Engine, str]:
    if base.startswith("postgresql://"):
        base = "postgresql+psycopg://" + base.removeprefix("postgresql://")
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(base)
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{schema}", engine, schema


def _wait(check: Any, timeout: float, every: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise RuntimeError("timed out")


class FirstAnswer(threading.Thread):
    """Polls the stable address from the kill on; remembers the first 200."""

    def __init__(self, address: str) -> None:
        super().__init__(daemon=True)
        self.address = address
        self.at: float | None = None

    def run(self) -> None:
        deadline = time.time() + 60
        while self.at is None and time.time() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.address + "/", timeout=0.5).status_code == 200:
                    self.at = time.time()
                    return
            time.sleep(0.02)


def one_run(base_url: str, n: int, mode: str) -> dict[str, float]:
    """``standby``: two servers on PostgreSQL, the leader killed. ``restart``: the reference,
    one server on SQLite killed and started again at once (what a process supervisor with
    an instant restart gives a single server)."""
    shared = mode == "standby"
    url, engine, schema = _schema(base_url) if shared else ("", None, "")
    project = f"bench{uuid.uuid4().hex[:6]}"
    servers: list[ServerProcess] = []
    try:
        with tempfile.TemporaryDirectory(prefix="conveyor-failover-") as tmp:
            root = Path(tmp)
            write_project(root, project=project, canary_steps=STEPS, scale_down_delay="1s")
            for name in ("a", "b") if shared else ("a",):
                # an empty CONVEYOR_DATABASE_URL means the project's SQLite file
                server = ServerProcess(root, {"CONVEYOR_DATABASE_URL": url}, f"server-{name}.log")
                server.start()
                servers.append(server)
            a = servers[0]
            v1 = build(root)
            r1 = a.post("/api/v1/releases", {"service": "catalog", "env": ENV, "artifact": v1})
            _wait(lambda: a.get(f"/api/v1/releases/{r1['id']}")["phase"] == "succeeded", 60)
            (root / "services" / "catalog" / "VERSION").write_text("v2\n")
            v2 = build(root)
            r2 = a.post("/api/v1/releases", {"service": "catalog", "env": ENV, "artifact": v2})

            def held_at_20() -> bool:
                status = a.get(f"/api/v1/releases/{r2['id']}")["status"]
                at_20 = status.get("weights", {}).get(r2["template"]) == 20
                return at_20 and status.get("step_index") == 1 and bool(status.get("paused"))

            _wait(held_at_20, 60)  # in the pause step, so `promote` moves it to 100%
            address = a.get("/api/v1/status", env=ENV)["services"][0]["address"]
            if shared:
                holder = {row["env"]: row for row in a.get("/api/v1/leases")["leases"]}[ENV]
                mine = f":{a.process.pid}:" in holder["holder"]  # type: ignore[union-attr]
                leader, survivor = (a, servers[1]) if mine else (servers[1], a)
            else:
                leader = survivor = a
            killed_at = time.time()
            leader.kill()
            watcher = FirstAnswer(address)
            watcher.start()
            if not shared:
                survivor.start()  # the single server, started again at once
            survivor.post(
                "/api/v1/control", {"service": "catalog", "env": ENV, "action": "promote"}
            )

            def shifted() -> float | None:
                events = survivor.get("/api/v1/events", env=ENV, limit=5000)["events"]
                for event in events:
                    if (
                        event["kind"] == "traffic.shifted"
                        and event.get("release_id") == r2["id"]
                        and event["details"].get("canary_percent") == 100
                    ):
                        return float(event["at"])
                return None

            try:
                drove_at = _wait(shifted, 30, every=0.1)
            except RuntimeError:
                RESULTS.mkdir(parents=True, exist_ok=True)
                for log in root.glob("server-*.log"):
                    (RESULTS / f"failover-{mode}-{n}-{log.name}").write_bytes(log.read_bytes())
                raise
            watcher.join(60)
            events = survivor.get("/api/v1/events", env=ENV, limit=5000)["events"]
            lease_at = max(float(e["at"]) for e in events if e["kind"] == "lease.acquired")
            result = {
                "lease": lease_at - killed_at,
                "drives": drove_at - killed_at,
                "serves": (watcher.at or float("nan")) - killed_at,
            }
            print(
                f"  {mode} run {n}: lease {result['lease']:.2f}s, drives "
                f"{result['drives']:.2f}s, serves {result['serves']:.2f}s",
                flush=True,
            )
            return result
    finally:
        for server in servers:
            server.stop()
        for pid in project_processes(project):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if engine is not None:
            with engine.begin() as conn:
                conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
            engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    base = os.environ.get("CONVEYOR_TEST_DATABASE_URL", "")
    if not base.startswith("postgresql"):
        sys.exit("set CONVEYOR_TEST_DATABASE_URL=postgresql://... (a PostgreSQL for schemas)")
    bound = TTL + RENEW_EVERY
    print(f"failover: {args.runs} runs each; lease TTL {TTL}s, renewal every {RENEW_EVERY}s")
    runs: dict[str, list[dict[str, float]]] = {"standby": [], "restart": []}
    for n in range(args.runs):  # interleaved, so both see the same machine
        for mode in runs:
            runs[mode].append(one_run(base, n + 1, mode))
    medians = {
        mode: {key: statistics.median(r[key] for r in rs) for key in ("lease", "drives", "serves")}
        for mode, rs in runs.items()
    }
    print(
        f"\n{'measure':<8} {'standby':>8} {'min':>6} {'max':>6} {'restart':>8} "
        f"{'standby/restart':>16} {f'standby/bound {bound}s':>20}"
    )
    for key in ("lease", "drives", "serves"):
        values = [r[key] for r in runs["standby"]]
        standby, restart = medians["standby"][key], medians["restart"][key]
        print(
            f"{key:<8} {standby:>7.2f}s {min(values):>5.2f}s {max(values):>5.2f}s "
            f"{restart:>7.2f}s {standby / restart:>15.2f}x {standby / bound:>19.2f}x"
        )
    worst = max(r["drives"] for r in runs["standby"])
    target = "met" if medians["standby"]["drives"] <= 5.0 else "MISSED"
    print(
        f"\ntarget: a standby drives within 5 s of the leader's death: {target} "
        f"(worst {worst:.2f}s)"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "failover.json").write_text(
        json.dumps({"ttl": TTL, "renew_every": RENEW_EVERY, "runs": runs}, indent=2)
    )


if __name__ == "__main__":
    main()
