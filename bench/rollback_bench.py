"""Time to rollback: how long users are exposed to a bad release, with the default triggers.

Run: .venv/bin/python bench/rollback_bench.py [--quick] [--runs 5] [--readiness-runs 3]

For each fault the example service can be released with (30% errors, a crash 2 s after
start, a readiness probe that never passes) and each strategy (rolling, rolling with
``min_ready: 5s`` for the crash and error faults, blue-green), under
steady load of 50 and 200 requests/s through the stable address, one run is: a healthy v1
serves, a v2 with the fault switched on is deployed, Conveyor rolls it back on its own. Per
run we measure, from the outside wherever possible:

  (a) time to safety: from the first request a user saw fail (or, when no user saw one, the
      first sign of the fault: a crash or an HTTP readiness failure of a new instance) to the
      ledger's ``traffic.switched`` with ``rollback: true``. When no user was ever answered
      by the bad version it is 0 and the row says "never left the old version";
  (b) from the deploy call to the ``release.rolled_back`` event;
  (c) blast radius: failed / total requests between the deploy call and the end of the
      rollout.

The rollback triggers, the progress deadline and the strategies are the config schema's
defaults (the config below does not set them, and the bench checks that); the service block
is the example catalog's as examples/shop/conveyor.yaml declares it, minus PRICING_URL. The
controller ticks every 0.2 s, like ``conveyor server``. ``--tuned`` instead runs the tight
timings of tests/controller/harness.py (10 s deadline, 0.2 s probes, 0.1 s tick), labelled
as such.

The stack is the one the integration tests use (real store, builds, child processes, the
built-in router and the controller in one event loop, see tests/controller/harness.py). The
load generator runs in its own process, as users would: sharing the controller's event loop
and GIL would slow down the very thing being measured. The readiness fault waits out the
60 s progress deadline, so its runs go side by side in separate environments of one stack;
everything else runs one at a time. Raw runs go to bench/results/rollback.json
(rollback-tuned.json with ``--tuned``; gitignored).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.controller.harness import EXAMPLES, Stack  # noqa: E402

from conveyor.config.loader import LoadedProject, load_project  # noqa: E402
from conveyor.config.schema import RollbackConfig  # noqa: E402
from conveyor.load.generator import LoadGenerator  # noqa: E402
from conveyor.server.stack import build_stack  # noqa: E402
from conveyor.store.records import ReleaseRecord  # noqa: E402

RESULTS = REPO / "bench" / "results"
FAULTS = {
    "error-rate": {"FAULT_ERROR_RATE": "0.3"},
    "crash": {"FAULT_CRASH_AFTER": "2"},
    "readiness": {"FAULT_READINESS": "fail"},
}
STRATEGIES = ("rolling", "blue_green")
MIN_READY = "{rolling: {min_ready: 5s}}"  # rolling that keeps the old set until new ones soak
LABELS = {MIN_READY: "rolling+5s"}
RATES = (50, 200)
WARMUP = 1.0  # seconds of load on v1 before the bad deploy
SIDE_BY_SIDE_RATE = 600  # requests/s in all, for readiness runs that share the clock
TAIL = 0.5  # seconds of load kept after the rollout ended (late failures would show here)

CONFIG = """\
project: rollbench
services:
  catalog:
    path: services/catalog
    build: {{run: "true", outputs: [app, VERSION]}}
    run: "exec python3 app/server.py"
    instances: 2
    health:
      readiness: {{path: /health/ready, timeout: 2s, period: {period}, failure_threshold: {ft}}}
      liveness: {{path: /health/live, timeout: 2s, period: 5s, failure_threshold: 3}}
    config: {{GREETING: hello}}
environments:
{environments}
"""


@dataclass(frozen=True)
class Timings:
    """What differs between the default run and the tuned one."""

    name: str
    tick: float = 0.2
    probe_period: str = "0.5s"
    failure_threshold: int = 3
    deadline: str | None = None  # None: the schema default (60 s)


DEFAULT = Timings("default")
TUNED = Timings("tuned", tick=0.1, probe_period="0.2s", failure_threshold=2, deadline="10s")


# --- the load, in its own process ----------------------------------------------------------


def _load_child(conn: Connection, port: int, rate: float) -> None:
    asyncio.run(_load_serve(conn, port, rate))


async def _load_serve(conn: Connection, port: int, rate: float) -> None:
    generator = LoadGenerator("127.0.0.1", port, rate=rate, connections=8)
    await generator.start()
    conn.send("started")
    await asyncio.get_running_loop().run_in_executor(None, conn.recv)
    await generator.stop()
    conn.send([(o.at, o.failed, o.version) for o in generator.outcomes()])


class LoadProcess:
    """Users hitting the stable address from outside the controller's process."""

    def __init__(self, port: int, rate: float) -> None:
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_load_child, args=(child, port, rate), daemon=True)

    async def start(self) -> None:
        self.process.start()
        await asyncio.to_thread(self._expect_started)

    def _expect_started(self) -> None:
        if not self.conn.poll(30) or self.conn.recv() != "started":
            raise RuntimeError("the load process did not start")

    async def stop(self) -> list[tuple[float, bool, str | None]]:
        self.conn.send("stop")
        outcomes: list[tuple[float, bool, str | None]] = await asyncio.to_thread(self.conn.recv)
        await asyncio.to_thread(self.process.join, 10)
        return outcomes


# --- the stack -----------------------------------------------------------------------------


def write_config(root: Path, envs: dict[str, str], timings: Timings) -> Path:
    shutil.copytree(
        EXAMPLES / "catalog",
        root / "services" / "catalog",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    deadline = f", progress_deadline: {timings.deadline}" if timings.deadline else ""
    lines = [f"  {env}: {{strategy: {strategy}{deadline}}}" for env, strategy in envs.items()]
    path = root / "conveyor.yaml"
    path.write_text(
        CONFIG.format(
            period=timings.probe_period,
            ft=timings.failure_threshold,
            environments="\n".join(lines),
        )
    )
    return path


@asynccontextmanager
async def bench_stack(root: Path, envs: dict[str, str], timings: Timings) -> AsyncIterator[Stack]:
    config_file = write_config(root, envs, timings)
    project = load_project(config_file)
    for env in envs:
        # The point of the bench: the triggers users get when they configure nothing.
        assert project.config.effective_rollback(env) == RollbackConfig(), env
    async with running(root, project, config_file, tick=timings.tick) as stack:
        yield stack


@asynccontextmanager
async def running(
    root: Path, project: LoadedProject, config_file: Path, *, tick: float
) -> AsyncIterator[Stack]:
    """The server's own stack for a bench project, started; its instances stopped after."""
    parts = build_stack(config_file, tick=tick)
    await parts.start()
    try:
        yield Stack(root, project, parts)
    finally:
        await parts.close(stop_instances=True)


async def settled(s: Stack, env: str, revision: int, timeout: float = 60) -> None:
    """Only the stable revision runs, at full strength and ready: the next run starts clean."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        instances = s.instances(env)
        if len(instances) == 2 and all(i.revision == revision and i.ready for i in instances):
            return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{env} did not settle on r{revision}: {s.instances(env)}")


# --- one run -------------------------------------------------------------------------------


@dataclass
class Run:
    strategy: str
    fault: str
    rate: int
    timings: str
    reason: str | None = None
    phase: str = ""
    requests: int = 0
    failed: int = 0
    served_by_new: int = 0
    failed_after_restore: int = 0
    detected: float | None = None  # abort, seconds after the deploy call
    first_user_failure: float | None = None
    first_signal: float | None = None  # first crash / HTTP readiness failure of a new instance
    restored: float | None = None  # the rollback's traffic.switched
    rolled_back: float | None = None  # (b)
    time_to_safety: float | None = None  # (a)
    basis: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def blast(self) -> float:
        return 100.0 * self.failed / self.requests if self.requests else 0.0


async def watch_new(s: Stack, env: str, revision: int, signals: list[float]) -> None:
    """The first moment the bad version visibly misbehaves, for faults users never see.

    A probe that failed with an HTTP status (the process answered, and said "not ready") or
    an instance that exited: both are the fault itself, unlike the connection-refused probes
    of an instance still starting.
    """
    while True:
        for inst in s.instances(env):
            if inst.revision != revision:
                continue
            seen = [p.at for p in inst.recent_probes if not p.ok and p.detail[:1].isdigit()]
            if inst.restarts > 0 or inst.state in ("backoff", "failed"):
                seen.append(time.time())
            if seen and (not signals or min(seen) < signals[0]):
                signals[:] = [min(seen)]
        await asyncio.sleep(0.05)


async def one_run(
    s: Stack, env: str, strategy: str, fault: str, rate: int, n: int, v2: str, timings: Timings
) -> Run:
    stable = s.store.current_release("catalog", env)
    assert stable is not None
    await settled(s, env, stable.revision)
    run = Run(LABELS.get(strategy, strategy), fault, rate, timings.name)
    load = LoadProcess(s.port(env), rate)
    await load.start()
    await asyncio.sleep(WARMUP)
    signals: list[float] = []
    # A distinct config per run: a distinct version, so no run inherits another's counters.
    overrides = {**FAULTS[fault], "BENCH_RUN": str(n)}
    deployed_at = time.time()
    bad = await s.deploy(env, v2, overrides=overrides)
    watcher = asyncio.create_task(watch_new(s, env, bad.revision, signals))
    try:
        final = await s.wait(bad, timeout=180)
        ended_at = time.time()
        await asyncio.sleep(TAIL)
    finally:
        watcher.cancel()
        outcomes = await load.stop()
    measure(run, s, final, outcomes, signals, deployed_at, ended_at)
    return run


def measure(
    run: Run,
    s: Stack,
    bad: ReleaseRecord,
    outcomes: list[tuple[float, bool, str | None]],
    signals: list[float],
    deployed_at: float,
    ended_at: float,
) -> None:
    run.phase = bad.phase
    abort = asdict(bad.status.abort) if bad.status.abort else {}
    run.reason = abort.get("reason")
    if abort.get("at"):
        run.detected = abort["at"] - deployed_at
    events = s.store.events(release_id=bad.id)
    restores = [e.at for e in events if e.kind == "traffic.switched" and e.details.get("rollback")]
    done = [e.at for e in events if e.kind in ("release.rolled_back", "release.failed")]
    during = [o for o in outcomes if deployed_at <= o[0] <= ended_at]
    failures = sorted(o[0] for o in outcomes if o[1] and o[0] >= deployed_at)
    run.requests = len(during)
    run.failed = sum(1 for o in during if o[1])
    run.served_by_new = sum(1 for o in outcomes if o[2] == str(bad.revision))
    if done:
        run.rolled_back = done[0] - deployed_at
    if signals:
        run.first_signal = min(signals) - deployed_at
    if failures:
        run.first_user_failure = failures[0] - deployed_at
    if restores:
        run.restored = restores[0] - deployed_at
        run.failed_after_restore = sum(1 for t in failures if t > restores[0])
    elif run.served_by_new or failures:
        run.notes.append("users reached the bad version but no rollback traffic switch")
    if not run.served_by_new and not failures:
        run.time_to_safety = 0.0
        run.basis = "never left the old version"
        if restores:
            run.notes.append("a rollback traffic.switched was recorded anyway")
        return
    start = run.first_user_failure if failures else run.first_signal
    run.basis = "first user failure" if failures else "first crash/readiness failure"
    if start is not None and run.restored is not None:
        run.time_to_safety = run.restored - start


# --- plans -------------------------------------------------------------------------------


async def sequential_cases(
    workdir: Path, runs: int, timings: Timings, faults: Iterable[str]
) -> list[Run]:
    """Faults that resolve in seconds: one at a time, cases interleaved so drift hits all alike."""
    envs = {"rolling": "rolling", "rolling-5s": MIN_READY, "blue-green": "blue_green"}
    out: list[Run] = []
    async with bench_stack(workdir / f"seq-{timings.name}", envs, timings) as s:
        v1, v2 = await s.build("v1"), await s.build("v2")
        for env in envs:
            first = await s.wait(await s.deploy(env, v1))
            assert first.phase == "succeeded", first.status
        n = 0
        for rep in range(runs):
            for rate in RATES:
                for env, strategy in envs.items():
                    for fault in faults:
                        n += 1
                        run = await one_run(s, env, strategy, fault, rate, n, v2, timings)
                        out.append(run)
                        progress(run, rep)
    return out


async def readiness_cases(workdir: Path, runs: int, timings: Timings) -> list[Run]:
    """Readiness faults wait out the progress deadline; their runs share the wall clock.

    Runs are packed into groups of at most ``SIDE_BY_SIDE_RATE`` requests/s in all, so the
    router (in the controller's process) is never the bottleneck of a group.
    """
    cases = [(strategy, rate) for rate in sorted(RATES, reverse=True) for strategy in STRATEGIES]
    groups: list[list[tuple[str, int]]] = []
    for case in [c for c in cases for _ in range(runs)]:
        fits = [g for g in groups if sum(r for _, r in g) + case[1] <= SIDE_BY_SIDE_RATE]
        if fits:
            fits[0].append(case)
        else:
            groups.append([case])
    out: list[Run] = []
    for g, group in enumerate(groups):
        envs = {f"r{i}": strategy for i, (strategy, _) in enumerate(group)}
        async with bench_stack(workdir / f"ready-{timings.name}-{g}", envs, timings) as s:
            v1, v2 = await s.build("v1"), await s.build("v2")
            firsts = [await s.deploy(env, v1) for env in envs]
            await asyncio.gather(*(s.wait(first) for first in firsts))
            results = await asyncio.gather(
                *(
                    one_run(s, f"r{i}", strategy, "readiness", rate, i, v2, timings)
                    for i, (strategy, rate) in enumerate(group)
                )
            )
        for run in results:
            out.append(run)
            progress(run, 0)
    return out


def progress(run: Run, rep: int) -> None:
    a = "-" if run.time_to_safety is None else f"{run.time_to_safety:.2f}s"
    b = "-" if run.rolled_back is None else f"{run.rolled_back:.1f}s"
    print(
        f"  [{run.timings} #{rep + 1}] {run.strategy:10} {run.fault:10} {run.rate:3}/s  "
        f"{run.reason or run.phase:17} (a) {a:>6}  (b) {b:>6}  "
        f"(c) {run.failed}/{run.requests}  {run.basis}{'; ' if run.notes else ''}"
        f"{'; '.join(run.notes)}",
        flush=True,
    )


# --- report ------------------------------------------------------------------------------


def _median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarize(runs: list[Run]) -> list[dict[str, Any]]:
    cases: dict[tuple[str, str, str, int], list[Run]] = {}
    for run in runs:
        cases.setdefault((run.timings, run.fault, run.strategy, run.rate), []).append(run)
    rows = []
    for (timings, fault, strategy, rate), group in cases.items():
        never_left = sum(1 for r in group if r.basis == "never left the old version")
        rows.append(
            {
                "timings": timings,
                "fault": fault,
                "strategy": strategy,
                "rate": rate,
                "runs": len(group),
                "reasons": sorted({r.reason or r.phase for r in group}),
                "time_to_safety": _median(r.time_to_safety for r in group),
                "time_to_safety_range": _range(r.time_to_safety for r in group),
                "never_left_old": never_left,
                "detected": _median(r.detected for r in group),
                "abort_to_restore": _median(
                    r.restored - r.detected
                    for r in group
                    if r.restored is not None and r.detected is not None
                ),
                "deploy_to_rolled_back": _median(r.rolled_back for r in group),
                "blast_pct": _median(r.blast for r in group),
                "failed": _median(r.failed for r in group),
                "requests": _median(r.requests for r in group),
                "failed_after_restore": sum(r.failed_after_restore for r in group),
            }
        )
    return rows


def _range(values: Iterable[float | None]) -> list[float] | None:
    present = [v for v in values if v is not None]
    return [round(min(present), 3), round(max(present), 3)] if present else None


def print_table(rows: list[dict[str, Any]]) -> None:
    head = (
        f"{'timings':8} {'strategy':10} {'fault':10} {'req/s':>5} {'runs':>4}  {'reason':17} "
        f"{'(a) fail->old':>14} {'abort':>6} {'(b) ->rolled_back':>17} "
        f"{'(c) failed/total':>17}  note"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        a = "-" if r["time_to_safety"] is None else f"{r['time_to_safety']:.2f}s"
        if r["never_left_old"] == r["runs"]:
            a = "0 (never left)"
        det = "-" if r["detected"] is None else f"{r['detected']:.1f}s"
        b = "-" if r["deploy_to_rolled_back"] is None else f"{r['deploy_to_rolled_back']:.1f}s"
        c = f"{r['failed']:g}/{r['requests']:g} ({r['blast_pct']:.1f}%)"
        note = []
        if 0 < r["never_left_old"] < r["runs"]:
            note.append(f"{r['never_left_old']}/{r['runs']} never left old")
        if r["failed_after_restore"]:
            note.append(f"{r['failed_after_restore']} failures after restore (all runs)")
        print(
            f"{r['timings']:8} {r['strategy']:10} {r['fault']:10} {r['rate']:>5} {r['runs']:>4}  "
            f"{'/'.join(r['reasons']):17} {a:>14} {det:>6} {b:>17} {c:>17}  {'; '.join(note)}"
        )


def machine() -> dict[str, Any]:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
        return done.stdout.strip()

    return {
        "commit": git("rev-parse", "HEAD"),
        "dirty_src": bool(git("status", "--porcelain", "--", "src", "examples")),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
    }


async def main_async(args: argparse.Namespace) -> list[Run]:
    timings = TUNED if args.tuned else DEFAULT
    workdir = Path(tempfile.mkdtemp(prefix="conveyor-rollbench-"))
    runs: list[Run] = []
    try:
        fast = [f for f in ("error-rate", "crash") if f in args.faults]
        if fast:
            print(f"error-rate and crash faults, {args.runs} run(s) per case:", flush=True)
            runs += await sequential_cases(workdir, args.runs, timings, fast)
        if "readiness" in args.faults:
            print(f"readiness fault, {args.readiness_runs} run(s) per case, side by side:")
            runs += await readiness_cases(workdir, args.readiness_runs, timings)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per error/crash case")
    parser.add_argument("--readiness-runs", type=int, default=3, help="runs per readiness case")
    parser.add_argument("--quick", action="store_true", help="2 runs per case, 1 for readiness")
    parser.add_argument("--tuned", action="store_true", help="the test harness' tight timings")
    parser.add_argument("--faults", nargs="+", choices=list(FAULTS), default=list(FAULTS))
    args = parser.parse_args()
    if args.quick:
        args.runs, args.readiness_runs = 2, 1
    started = time.monotonic()
    env = machine()
    runs = asyncio.run(main_async(args))
    rows = summarize(runs)
    seconds = time.monotonic() - started
    print(f"\nmedians over runs ({seconds:.0f}s in all; (a) and (b) in seconds):")
    print_table(rows)
    out = RESULTS / ("rollback-tuned.json" if args.tuned else "rollback.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "command": " ".join([Path(sys.executable).name, *sys.argv]),
                "machine": env,
                "seconds": round(seconds, 1),
                "rollback_defaults": RollbackConfig().model_dump(),
                "timings": asdict(TUNED if args.tuned else DEFAULT),
                "summary": rows,
                "runs": [{**asdict(r), "blast_pct": r.blast} for r in runs],
            },
            indent=2,
        )
        + "\n"
    )
    print(f"raw runs: {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
