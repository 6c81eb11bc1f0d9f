"""Insight at the scale of an organization: 500 services x 3 environments, 1,000,000 events.

What it measures, on SQLite and (with ``--database-url postgresql://...``) PostgreSQL:

* ``GET /api/v1/status`` (every service and environment) -- target < 200 ms;
* ``GET /api/v1/dora`` for production over 90 days -- target < 500 ms;
* ``GET /api/v1/health`` in the same run, the reference the two are divided by;
* the idle server's CPU with a driver per (service, env) -- target < 10% of a core.

The state is generated straight into the store (releases with real plans, artifacts with
commit histories, addresses, and a hash-chained ledger of 1,000,000 events written with the
store's own hash function), then a real server stack is built on it, with a conveyor.yaml of
500 services, and served by uvicorn on a local port. Instances at that scale do not fit one
machine, so the runtime and the router are fakes (``FakeTarget``, ``FakeRouter``: no
processes, no sockets) -- for this benchmark only; everything else is the real code.

    .venv/bin/python bench/insight_scale.py                       # SQLite in a temp dir
    .venv/bin/python bench/insight_scale.py --database-url postgresql://postgres@127.0.0.1:5432/test

Medians of ``--rounds`` requests (after one warm-up each) are printed, with their ratio to
the health check's median.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import http.client
import json
import os
import random
import resource
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import uvicorn

from conveyor.core.model import InstanceObservation, InstanceSpec, RouteTable, VersionCounters
from conveyor.core.plan import InstanceTemplate, ReleasePlan
from conveyor.core.state import Phase, RolloutStatus, StrategySpec
from conveyor.server.api import create_app
from conveyor.server.stack import build_stack
from conveyor.store import ledger, rows
from conveyor.store.engine import create_engine
from conveyor.store.repository import Store
from conveyor.store.tables import addresses, artifacts, events, ledger_head, releases

ENVS = ("dev", "staging", "production")
RELEASES = {"dev": 50, "staging": 40, "production": 36}  # per service, over DAYS
DAYS = 120
DAY = 86400.0


# --- fakes: the runtime and the router, for this benchmark only -----------------------------


class FakeTarget:
    """A runtime whose instances are the ones the releases want, always ready: what a
    healthy organization looks like to an idle controller. Launches nothing."""

    def __init__(self, running: dict[tuple[str, str], tuple[str, int]] | None = None) -> None:
        self.running = running or {}

    async def start(self) -> None:
        pass

    async def adopt(self, env: str, epoch: int) -> None:
        pass

    async def release(self, env: str) -> None:
        pass

    async def launch(self, spec: InstanceSpec) -> InstanceObservation:
        raise RuntimeError("FakeTarget launches nothing")

    async def stop(self, instance_id: str) -> None:
        pass

    def subscribe(self, listener: Callable[[str, str], None]) -> None:
        pass

    def observe(self, service: str, env: str) -> list[InstanceObservation]:
        found = self.running.get((service, env))
        if found is None:
            return []
        version, revision = found
        return [
            InstanceObservation(
                instance_id=f"{service}-{env}-{n}",
                service=service,
                env=env,
                version=version,
                revision=revision,
                host="127.0.0.1",
                port=0,
                pid=None,
                state="running",
                ready=True,
                restarts=0,
                started_at=0.0,
                ever_ready=True,
            )
            for n in range(2)
        ]

    async def close(self, *, stop_instances: bool) -> None:
        pass


class FakeRouter:
    """A router that listens nowhere and counts nothing."""

    async def serve(
        self, service: str, env: str, host: str, port: int, preview_port: int | None
    ) -> None:
        pass

    def apply(self, service: str, env: str, table: RouteTable) -> None:
        pass

    def in_flight(self, service: str, env: str, instance_id: str) -> int:
        return 0

    def counters(self, service: str, env: str) -> dict[str, VersionCounters]:
        return {}

    def latency_samples(self, service: str, env: str, version: str) -> tuple[float, ...]:
        return ()

    def prometheus_text(self) -> str:
        return ""

    async def close(self) -> None:
        pass

    async def detach(self) -> None:
        pass


# --- generating the state -------------------------------------------------------------------


def _sha(text: str, n: int = 40) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def project_yaml(services: int) -> str:
    lines = ["project: scale", "services:"]
    for s in range(services):
        lines += [f"  svc{s:03d}:", '    build: {run: "true", outputs: [app]}', '    run: "true"']
    lines += ["environments:", *(f"  {e}:" for e in ENVS)]
    return "\n".join(lines) + "\n"


def generate(
    url: str, services: int, total_events: int, now: float, seed: int = 7
) -> dict[str, int]:
    """Write the whole history; returns counts."""
    rng = random.Random(seed)
    engine = create_engine(url)
    start = now - DAYS * DAY
    artifact_rows: list[dict[str, Any]] = []
    release_rows: list[dict[str, Any]] = []
    timeline: list[tuple[float, str, str, str, int | None, dict[str, Any]]] = []
    release_id = 0
    for s in range(services):
        service = f"svc{s:03d}"
        # a commit every ~8 hours; artifacts are built from every ~3rd commit
        commits: list[tuple[str, int]] = []
        t = start - 10 * DAY
        while t < now:
            t += rng.uniform(2, 14) * 3600
            commits.append((_sha(f"{service}-{len(commits)}"), int(t)))
        builds = []
        for index in range(2, len(commits), 3):
            digest = "sha256:" + _sha(f"{service}-build-{index}", 64)
            history = [[sha, at] for sha, at in reversed(commits[max(0, index - 30) : index + 1])]
            built_at = commits[index][1] + 600.0
            artifact_rows.append(
                {
                    "digest": digest,
                    "service": service,
                    "commit": commits[index][0],
                    "branch": "main",
                    "dirty": False,
                    "created_at": built_at,
                    "size": 1000,
                    "files": 3,
                    "build_command": "true",
                    "outputs": ["app"],
                    "metadata": {"commits": history},
                    "actor": "ci",
                }
            )
            builds.append((built_at, digest))
        for env in ENVS:
            count = RELEASES[env]
            times = sorted(rng.uniform(start, now - 3600) for _ in range(count))
            succeeded: list[tuple[int, int, str]] = []  # (id, revision, digest)
            for revision, created in enumerate(times, start=1):
                release_id += 1
                usable = [d for at, d in builds if at < created] or [builds[0][1]]
                roll = rng.random()
                rollback_of = None
                reason = "deploy"
                digest = usable[-1]
                if roll < 0.05 and len(succeeded) >= 2:
                    rollback_of = succeeded[-2][1]
                    digest = succeeded[-2][2]
                    reason = f"rollback to r{rollback_of}"
                elif roll < 0.08:
                    reason = "fix: generated"
                phase = "rolled_back" if 0.08 <= roll < 0.15 else "succeeded"
                took = rng.uniform(60, 900)
                plan = ReleasePlan(
                    service=service,
                    env=env,
                    artifact=digest,
                    config={"LOG_LEVEL": "info"},
                    instance=InstanceTemplate(command="true"),
                    desired=2,
                    strategy=StrategySpec(kind="rolling"),
                    commit=None,
                )
                status = RolloutStatus(phase=Phase(phase), weights={plan.version: 100})
                release_rows.append(
                    {
                        "id": release_id,
                        "service": service,
                        "env": env,
                        "revision": revision,
                        "artifact_digest": digest,
                        "template": plan.version,
                        "config": dict(plan.config),
                        "config_version": plan.config_version,
                        "instances": 2,
                        "strategy": rows.json_ready(plan.strategy.to_json()),
                        "spec": rows.legacy_spec(plan, revision),
                        "status": rows.status_json(status, {}),
                        "plan": rows.json_ready(plan.to_json()),
                        "phase": phase,
                        "done": True,
                        "stable_release_id": None,
                        "rollback_of": rollback_of,
                        "reason": reason,
                        "actor": "ci",
                        "created_at": created,
                        "updated_at": created + took,
                        "status_version": 3,
                        "finished_at": created + took,
                    }
                )
                ids = (created, service, env, release_id)
                timeline.append(
                    (ids[0], "release.created", service, env, release_id, {"revision": revision})
                )
                timeline.append((created + 1, "rollout.started", service, env, release_id, {}))
                if phase == "succeeded":
                    timeline.append(
                        (created + took, "release.succeeded", service, env, release_id, {})
                    )
                    succeeded.append((release_id, revision, digest))
                else:
                    timeline.append(
                        (
                            created + took / 2,
                            "release.aborted",
                            service,
                            env,
                            release_id,
                            {"reason": "error-rate"},
                        )
                    )
                    timeline.append(
                        (created + took, "release.rolled_back", service, env, release_id, {})
                    )
    filler = total_events - len(timeline)
    for _ in range(max(0, filler)):
        r = release_rows[rng.randrange(len(release_rows))]
        at = r["created_at"] + rng.uniform(0, 600)
        timeline.append(
            (
                at,
                "analysis.measured",
                r["service"],
                r["env"],
                r["id"],
                {"metric": "error-rate", "value": round(rng.random() / 100, 5)},
            )
        )
    timeline.sort(key=lambda e: e[0])
    with engine.begin() as conn:
        for chunk in _chunks(artifact_rows, 2000):
            conn.execute(sa.insert(artifacts), chunk)
        for chunk in _chunks(release_rows, 2000):
            conn.execute(sa.insert(releases), chunk)
        pairs = sorted({(r["service"], r["env"]) for r in release_rows})
        conn.execute(
            sa.insert(addresses),
            [
                {
                    "service": s,
                    "env": e,
                    "host": "127.0.0.1",
                    "port": 20000 + i,
                    "preview_port": 40000 + i,
                    "pinned": False,
                    "created_at": start,
                    "updated_at": start,
                }
                for i, (s, e) in enumerate(pairs)
            ],
        )
        if conn.dialect.name == "postgresql":
            conn.execute(
                sa.text("SELECT setval(pg_get_serial_sequence('releases', 'id'), :n)"),
                {"n": release_id},
            )
    prev = ledger.GENESIS
    seq = 0
    batch: list[dict[str, Any]] = []
    with engine.begin() as conn:
        for at, kind, service, env, rid, details in timeline:
            seq += 1
            fields = {
                "seq": seq,
                "at": float(at),
                "actor": "ci",
                "kind": kind,
                "service": service,
                "env": env,
                "release_id": rid,
                "details": ledger.normalize_details(details),
                "prev_hash": prev,
            }
            prev = ledger.event_hash(**fields)
            batch.append({**fields, "hash": prev})
            if len(batch) >= 20000:
                conn.execute(sa.insert(events), batch)
                batch = []
        if batch:
            conn.execute(sa.insert(events), batch)
        conn.execute(sa.update(ledger_head).where(ledger_head.c.id == 1).values(seq=seq, hash=prev))
    if engine.dialect.name == "postgresql":
        # What autovacuum does to a table of fresh rows within a minute (its insert
        # threshold): statistics, and the visibility map index-only scans need. Measuring
        # straight after a bulk load would time a state a running server is never in.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("VACUUM ANALYZE"))
    engine.dispose()
    return {"artifacts": len(artifact_rows), "releases": len(release_rows), "events": seq}


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


# --- measuring ------------------------------------------------------------------------------


def _get(port: int, token: str, path: str) -> tuple[int, bytes, float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    began = time.perf_counter()
    conn.request("GET", path, headers={"authorization": f"Bearer {token}"})
    answer = conn.getresponse()
    body = answer.read()
    took = time.perf_counter() - began
    conn.close()
    return answer.status, body, took


def _median_ms(port: int, token: str, path: str, rounds: int) -> float:
    status, body, _ = _get(port, token, path)  # warm-up
    assert status == 200, body[:300]
    return statistics.median(_get(port, token, path)[2] for _ in range(rounds)) * 1000


@contextmanager
def _database(url: str | None, root: Path) -> Iterator[str]:
    if url is None:
        yield f"sqlite:///{root / 'state.db'}"
        return
    base = (
        url
        if not url.startswith("postgresql://")
        else "postgresql+psycopg://" + url.removeprefix("postgresql://")
    )
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(base)
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in base else "?"
    try:
        yield f"{base}{sep}options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(
    root: Path, url: str, rounds: int, idle_seconds: float, lease_ttl: float | None = None
) -> dict[str, float]:
    with Store.open(url) as store:
        running = {
            key: (release.template, release.revision)
            for key, release in store.current_releases().items()
        }
    stack = build_stack(
        root / "conveyor.yaml",
        database_url=url,
        routers={"builtin": FakeRouter},
        target=FakeTarget(running),
    )
    if lease_ttl is not None and stack.controller.leadership is not None:
        stack.controller.leadership.ttl = lease_ttl
    stack.app.tokens.bootstrap(stack.layout.admin_token, "bench")
    token = stack.layout.admin_token.read_text().strip()
    began = time.perf_counter()
    await asyncio.to_thread(
        stack.app.ledger.checkpoint, "bench"
    )  # the server's start then verifies only the tail
    print(
        f"  first checkpoint (full verification): {time.perf_counter() - began:.1f} s", flush=True
    )
    began = time.perf_counter()
    await stack.start()
    drivers = len(stack.controller._drivers)
    print(
        f"  server started with {drivers} drivers in {time.perf_counter() - began:.1f} s",
        flush=True,
    )
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(stack.app, project_name="scale"), log_level="critical", lifespan="off"
        )
    )
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.05)
    try:
        await asyncio.sleep(5)  # let the drivers settle into idle
        out: dict[str, float] = {"drivers": drivers}
        for name, path in (
            ("health", "/api/v1/health"),
            ("status", "/api/v1/status"),
            ("dora", "/api/v1/dora?env=production"),
        ):
            out[name] = await asyncio.to_thread(_median_ms, port, token, path, rounds)
            print(f"  {name}: median {out[name]:.1f} ms", flush=True)
        _, body, _ = await asyncio.to_thread(_get, port, token, "/api/v1/dora?env=production")
        report = json.loads(body)
        out["dora_deployments"] = report["total"]["deployment_frequency"]["deployments"]
        _, body, _ = await asyncio.to_thread(_get, port, token, "/api/v1/status")
        out["status_rows"] = len(json.loads(body)["services"])
        cpu0, wall0 = _cpu(), time.perf_counter()
        await asyncio.sleep(idle_seconds)
        out["idle_cpu_percent"] = 100 * (_cpu() - cpu0) / (time.perf_counter() - wall0)
        print(
            f"  idle: {out['idle_cpu_percent']:.2f}% of a core over {idle_seconds:.0f} s",
            flush=True,
        )
        # The reference: the same drivers polling every tick as they did before this work.
        for driver in stack.controller._drivers.values():
            driver.idle_tick = driver.tick
            driver.wake()
        await asyncio.sleep(3)
        cpu0, wall0 = _cpu(), time.perf_counter()
        await asyncio.sleep(min(idle_seconds, 10.0))
        out["polling_cpu_percent"] = 100 * (_cpu() - cpu0) / (time.perf_counter() - wall0)
        print(f"  polling every tick: {out['polling_cpu_percent']:.1f}% of a core", flush=True)
        return out
    finally:
        server.should_exit = True
        await serving
        await stack.close(stop_instances=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL"))
    parser.add_argument("--services", type=int, default=500)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--idle", type=float, default=30.0, help="seconds of idle CPU measured")
    parser.add_argument(
        "--lease-ttl",
        type=float,
        default=None,
        help="seconds a lease lives unrenewed (default: the server's own, core/leases.py)",
    )
    parser.add_argument(
        "--runs", type=int, default=1, help="server starts measured on the same generated state"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="insight-scale-") as tmp:
        root = Path(tmp)
        (root / "conveyor.yaml").write_text(project_yaml(args.services))
        os.environ.setdefault("CONVEYOR_KEY_DIR", str(root / "keys"))
        with _database(args.database_url, root) as url:
            Store.open(url).close()  # the schema, migrated
            began = time.perf_counter()
            counts = generate(url, args.services, args.events, time.time())
            engine = url.split(":")[0]
            print(
                f"{engine}: generated {counts} in {time.perf_counter() - began:.0f} s", flush=True
            )
            runs = []
            for run in range(args.runs):
                print(f"run {run + 1} (load average {os.getloadavg()[0]:.1f})", flush=True)
                runs.append(asyncio.run(measure(root, url, args.rounds, args.idle, args.lease_ttl)))
    if len(runs) > 1:
        print(
            f"\n{'run':<6}{'health ms':>10}{'status ms':>10}{'x health':>9}"
            f"{'dora ms':>10}{'x health':>9}"
        )
        for n, one in enumerate(runs, start=1):
            print(
                f"{n:<6}{one['health']:>10.2f}{one['status']:>10.1f}"
                f"{one['status'] / one['health']:>9.0f}{one['dora']:>10.1f}"
                f"{one['dora'] / one['health']:>9.0f}"
            )
    # the median run (by the DORA figure) is the one summarized
    out = sorted(runs, key=lambda one: one["dora"])[len(runs) // 2]
    health = out["health"]
    print(f"\n{engine}, {args.services} services x {len(ENVS)} envs, {counts['events']} events")
    print(f"{'what':<28}{'median ms':>12}{'x health':>10}{'target':>10}")
    for name, target in (("health", None), ("status", 200), ("dora", 500)):
        shown = f"< {target} ms" if target else ""
        print(f"{name:<28}{out[name]:>12.1f}{out[name] / health:>10.1f}{shown:>10}")
    print(
        f"status rows: {out['status_rows']}, "
        f"production deploys in 90 days: {out['dora_deployments']}"
    )
    print(
        f"idle CPU with {out['drivers']:.0f} drivers: "
        f"{out['idle_cpu_percent']:.2f}% of a core (target < 10%); "
        f"polling every 0.1 s as before: {out['polling_cpu_percent']:.1f}%"
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
