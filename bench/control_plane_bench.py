"""Failed requests while the server is killed (or stopped) and restarted mid-release.

Run: .venv/bin/python bench/control_plane_bench.py [--quick] [--rate 100] [--down 2]
                                                  [--baseline-src OTHER/src] [--no-haproxy]

The whole matrix the e2e test (tests/e2e/test_data_plane.py) samples: for each strategy
(rolling in `staging`, blue-green in `production`, canary in `canary`, canary behind HAProxy
in `haproxy`), each kill point (a ledger event of the release: the server is stopped the
moment it is committed) and each signal (SIGKILL: a crash; SIGTERM: a planned stop or an
upgrade), one run is: a fresh project, v1 released and serving, users calling the stable
address at ``--rate`` requests/s (the load generator runs in this process, on its own
thread), v2 deployed, the server stopped at the kill point, ``--down`` seconds with no
server at all, a new server started, the release followed to the end. Per run:

  failed    requests users saw fail from v2's deploy to convergence + 1 s (target 0)
  sent      requests in that window
  converged the release succeeded, 2 ready instances of v2, exactly 2 processes (no
            orphan, no duplicate)
  adopted   the router process (or HAProxy master) is the one from before the kill

``--baseline-src`` runs the SIGKILL cases again with another source tree (say an export
of the commit before the router moved out of the server: its router lived and died with
the server), labelled ``base``, in the same run. Raw runs go to
bench/results/control_plane.json (gitignored).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.controller.harness import write_project  # noqa: E402
from tests.e2e.server_process import (  # noqa: E402
    ServerProcess,
    build,
    project_processes,
    router_pid,
)

from conveyor.cli.demo import LoadThread  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "control_plane.json"
PROJECT = "cpbench"
STEPS = "[{set_weight: 20}, {pause: 1s}, {set_weight: 50}, {pause: 1s}]"

# (environment, strategy, kill points)
MATRIX = [
    ("staging", "rolling", ["instances.started", "instance.ready", "instances.stopped"]),
    ("production", "blue-green", ["instances.started", "traffic.switched", "instances.stopped"]),
    ("canary", "canary", ["traffic.shifted", "step.completed", "instances.stopped"]),
    ("haproxy", "canary+haproxy", ["traffic.shifted", "instances.stopped"]),
]
QUICK = {
    "staging": ["instance.ready"],
    "production": ["traffic.switched"],
    "canary": ["step.completed"],
    "haproxy": ["traffic.shifted"],
}


@dataclass
class Run:
    code: str  # "router" or "base"
    env: str
    strategy: str
    kill_at: str
    signal: str
    sent: int
    failed: int
    errors: list[str]
    converged: bool
    adopted: bool
    seconds: float


def _port(server: ServerProcess, env: str) -> int:
    row = server.get("/api/v1/status", env=env)["services"][0]
    return int(row["address"].rsplit(":", 1)[1])


def _event_seen(server: ServerProcess, release_id: int, kind: str) -> bool:
    events = server.get("/api/v1/events", release=release_id)["events"]
    return any(e["kind"] == kind for e in events)


def _converged(server: ServerProcess, env: str, release_id: int, revision: int) -> bool:
    release = server.get(f"/api/v1/releases/{release_id}")
    rows = server.get("/api/v1/status", env=env)["services"]
    instances = rows[0]["instances"] if rows else []
    return (
        release["phase"] == "succeeded"
        and release["done"]
        and len(instances) == 2
        and {i["revision"] for i in instances} == {revision}
        and all(i["ready"] for i in instances)
        and len(project_processes(server.root)) == 2
    )


def _data_plane_pid(root: Path, env: str) -> str | None:
    if env == "haproxy":
        pidfile = root / ".conveyor" / "routers" / "haproxy" / "haproxy.pid"
        return pidfile.read_text().strip() if pidfile.exists() else None
    pid = router_pid(root)
    return None if pid is None else str(pid)


def one_run(
    code: str, src: Path | None, env: str, strategy: str, kill_at: str, sig: str, args: Any
) -> Run:
    root = Path(tempfile.mkdtemp(prefix="cp-bench-"))
    extra = {"PYTHONPATH": str(src.resolve())} if src is not None else {}
    write_project(
        root,
        instances=2,
        verification="1s",
        deadline="20s",
        scale_down_delay="1s",
        project=PROJECT,
        canary_steps=STEPS,
    )
    server = ServerProcess(root, env=extra)
    load: LoadThread | None = None
    started = time.monotonic()
    converged = adopted = False
    report = None
    try:
        server.start()
        first = server.post(
            "/api/v1/releases", {"service": "catalog", "env": env, "artifact": build(root)}
        )["id"]
        _wait(lambda: _converged(server, env, first, 1), 60, server)
        before = _data_plane_pid(root, env)
        load = LoadThread(_port(server, env), rate=args.rate)
        load.start()
        (root / "services" / "catalog" / "VERSION").write_text("v2\n")
        second = server.post(
            "/api/v1/releases", {"service": "catalog", "env": env, "artifact": build(root)}
        )["id"]
        if env == "haproxy" and kill_at != "traffic.shifted":
            # its canary pauses until promoted: later kill points need the promotion first
            _wait(lambda: _event_seen(server, second, "traffic.shifted"), 60, server)
            _promote_until_accepted(server, env)
        _wait(lambda: _event_seen(server, second, kill_at), 60, server)
        if sig == "KILL":
            server.kill()
        else:
            server.stop()
        time.sleep(args.down)
        server.start()
        if env == "haproxy":  # its canary pauses until promoted (no other env does)
            _promote_until_done(server, env, second)
        converged = _wait(lambda: _converged(server, env, second, 2), 90, server, fail=False)
        adopted = before is not None and _data_plane_pid(root, env) == before
        time.sleep(1.0)
        report = load.stop()
        load = None
    finally:
        if load is not None:
            report = load.stop()
        try:
            server.down()
        except AssertionError as exc:  # an old tree's `down` reports differently
            print(f"  down: {exc}", file=sys.stderr)
        shutil.rmtree(root, ignore_errors=True)
    assert report is not None
    return Run(
        code,
        env,
        strategy,
        kill_at,
        sig,
        report.sent,
        report.failed,
        list(report.errors),
        converged,
        adopted,
        round(time.monotonic() - started, 1),
    )


def _promote_until_accepted(server: ServerProcess, env: str) -> None:
    body = {"service": "catalog", "env": env, "action": "promote"}
    for _ in range(100):
        try:
            server.post("/api/v1/control", body)
            return
        except AssertionError:  # not paused yet
            time.sleep(0.1)
    raise RuntimeError("the canary was never paused for promotion")


def _promote_until_done(server: ServerProcess, env: str, release_id: int) -> None:
    body = {"service": "catalog", "env": env, "action": "promote"}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        release = server.get(f"/api/v1/releases/{release_id}")
        if release["phase"] not in ("pending", "progressing"):
            return
        with contextlib.suppress(AssertionError):  # not paused (yet, or any more)
            server.post("/api/v1/control", body)
        time.sleep(0.5)


def _wait(predicate: Any, timeout: float, server: ServerProcess, fail: bool = True) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    if fail:
        raise RuntimeError(f"timed out waiting; server log:\n{server.log_tail()}")
    return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one kill point per strategy")
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--down", type=float, default=2.0, help="seconds with no server")
    parser.add_argument("--baseline-src", type=Path)
    parser.add_argument("--no-haproxy", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("CONVEYOR_LOG_LEVEL", "WARNING")

    plan: list[tuple[str, Path | None, str, str, str, str]] = []
    for env, strategy, points in MATRIX:
        if env == "haproxy" and (args.no_haproxy or not shutil.which("haproxy", path="/usr/sbin")):
            continue
        for point in QUICK[env] if args.quick else points:
            for sig in ("KILL", "TERM"):
                plan.append(("router", None, env, strategy, point, sig))
            if args.baseline_src is not None:
                plan.append(("base", args.baseline_src, env, strategy, point, "KILL"))

    runs: list[Run] = []
    for code, src, env, strategy, point, sig in plan:
        try:
            run = one_run(code, src, env, strategy, point, sig, args)
        except Exception as exc:  # a run that could not be carried out is reported, not lost
            print(f"{code:6} {strategy:15} kill at {point:18} SIG{sig:4} NOT RUN: {exc}"[:300])
            continue
        runs.append(run)
        _write(runs, args)
        print(
            f"{code:6} {strategy:15} kill at {point:18} SIG{sig:4} sent {run.sent:5} "
            f"failed {run.failed:4} converged {run.converged!s:5} adopted {run.adopted!s:5} "
            f"({run.seconds:.0f}s) {run.errors[:2]}",
            flush=True,
        )

    print()
    print(f"{'code':6} {'strategy':15} {'signal':7} {'runs':>4} {'failed':>7} {'median':>7}")
    for code in ("router", "base"):
        for _, strategy, _ in MATRIX:
            for sig in ("KILL", "TERM"):
                mine = [
                    r for r in runs if r.code == code and r.strategy == strategy and r.signal == sig
                ]
                if mine:
                    failed = [r.failed for r in mine]
                    print(
                        f"{code:6} {strategy:15} SIG{sig:4} {len(mine):4} {sum(failed):7} "
                        f"{statistics.median(failed):7.0f}"
                    )
    total = [r for r in runs if r.code == "router"]
    print(
        f"\nrouter: {sum(r.failed for r in total)} failed of {sum(r.sent for r in total)} "
        f"requests over {len(total)} runs; converged {sum(r.converged for r in total)}, "
        f"data plane adopted {sum(r.adopted for r in total)}"
    )
    print(f"wrote {RESULTS}")


def _write(runs: list[Run], args: Any) -> None:
    """After every run: a long matrix that stops half-way keeps what it measured."""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "command": " ".join([Path(sys.executable).name, *sys.argv]),
                "rate": args.rate,
                "down": args.down,
                "runs": [asdict(r) for r in runs],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
