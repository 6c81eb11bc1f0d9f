"""Canary: time to rollback and blast radius of a bad canary caught at its 5% step.

Run: .venv/bin/python bench/canary_bench.py [--quick] [--runs 5] [--slow-runs 3] [--tuned-runs 3]

Every run: a healthy v1 serves 50 requests/s (the load in its own process, as in
bench/rollback_bench.py, whose load process, settling and fault watcher this reuses); a v2
with one fault switched on is deployed as a canary with the steps
``[set_weight: 5, pause: 60s, set_weight: 25, pause: 60s, set_weight: 50, pause: 60s]``;
Conveyor rolls it back on its own. Measured per run, from the outside where possible:

  (a) time to rollback: from the first moment the canary is bad to the ledger's
      ``traffic.switched`` with ``rollback: true`` (all traffic on stable). "Bad" means the
      first request a user saw fail; for a crash or a failing readiness probe, the first crash
      or HTTP readiness failure if that came earlier; for a latency regression, the first
      request the canary answered (every one of them is slow). Also reported from the first
      request the canary served, since a faulty canary is bad from its first request;
  (b) the trigger that fired (the abort reason and its message);
  (c) blast radius: failed / all requests from the deploy call to ``release.rolled_back``,
      and the absolute count of failed requests.

Settings: "default" is the config schema's rollback defaults (checked at start; listed in
docs/canary.md "Defaults, and what they cost"), controller tick 0.2 s as ``conveyor
server``. Latency has no built-in trigger, so the "latency" environment adds a background
analysis of one ``compare_latency`` metric with its default thresholds (the sequential
test: p95, ratio 1.2 and 25 ms) measured every 5 s for the 180 s of steps.
"tuned" and "early" are the settings that meet the issue's targets, labelled as such.
Raw runs go to bench/results/canary.json (gitignored).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.rollback_bench import LoadProcess, machine, running, settled, watch_new  # noqa: E402
from tests.controller.harness import EXAMPLES, Stack  # noqa: E402

from conveyor.application import Caller  # noqa: E402
from conveyor.config.loader import load_project  # noqa: E402
from conveyor.config.schema import RollbackConfig  # noqa: E402
from conveyor.store.records import ReleaseRecord  # noqa: E402

RESULTS = REPO / "bench" / "results"
RATE = 50  # requests/s of total traffic
WARMUP = 1.0
TAIL = 0.5
TICK = 0.2  # as `conveyor server`
PLANNED_SECONDS = 180  # the three 60 s pauses: the least a good rollout of these steps lasts
STEPS = (
    "[{set_weight: 5}, {pause: 60s}, {set_weight: 25}, {pause: 60s}, "
    "{set_weight: 50}, {pause: 60s}]"
)
FAULTS = {
    "errors-0.3": {"FAULT_ERROR_RATE": "0.3"},
    "errors-0.2": {"FAULT_ERROR_RATE": "0.2"},
    "errors-0.1": {"FAULT_ERROR_RATE": "0.1"},
    "crash": {"FAULT_CRASH_AFTER": "2"},
    "readiness": {"FAULT_READINESS": "fail"},
    "latency": {"FAULT_LATENCY_MS": "300"},
}

CONFIG = """\
project: canarybench
analysis:
  latency:          # compare_latency, default thresholds, every 5 s for the 180 s of steps
    interval: 5s
    count: 36
    metrics:
      - {{name: p95-vs-stable, provider: builtin, query: compare_latency}}
  latency-open:     # the same, written as docs/canary.md's example: an interval, no count
    interval: 5s
    metrics:
      - {{name: p95-vs-stable, provider: builtin, query: compare_latency}}
  early:            # tuned: judge every second, decide on 10 canary requests or samples
    interval: 1s
    count: 180
    metrics:
      - name: errors-vs-stable
        provider: builtin
        query: compare_error_rate
        compare: {{min_requests: 10}}
      - name: p95-vs-stable
        provider: builtin
        query: compare_latency
        compare: {{min_samples: 10}}
services:
  catalog:
    path: services/catalog
    build: {{run: "true", outputs: [app, VERSION]}}
    run: "exec python3 app/server.py"
    instances: 2
    health:
      readiness: {{path: /health/ready, timeout: 2s, period: 0.5s, failure_threshold: 3}}
      liveness: {{path: /health/live, timeout: 2s, period: 5s, failure_threshold: 3}}
    config: {{GREETING: hello}}
environments:
{environments}
"""

# environment -> (what it adds to the canary strategy, extra environment settings)
ENVIRONMENTS: dict[str, tuple[str, str]] = {
    "default": ("", ""),
    "latency": (", analysis: latency", ""),
    "latency-open": (", analysis: latency-open", ""),
    "tuned": ("", ", rollback: {min_requests: 10, max_restarts: 1}, progress_deadline: 15s"),
    "early": (", analysis: early", ""),
}
DEFAULT_TRIGGERS = ("default", "latency", "latency-open")  # rollback block left unset


@dataclass(frozen=True)
class Case:
    fault: str
    env: str  # the settings: one of ENVIRONMENTS
    runs: str  # "fast", "slow" or "tuned": which run count applies
    note: str = ""


CASES = (
    Case("errors-0.3", "default", "fast"),
    Case("errors-0.2", "default", "fast"),
    Case("errors-0.1", "default", "fast"),
    Case("crash", "default", "fast"),
    Case("latency", "latency", "slow"),
    Case("latency", "latency-open", "once", "docs example: no count"),
    Case("errors-0.3", "tuned", "tuned"),
    Case("errors-0.1", "tuned", "tuned"),
    Case("crash", "tuned", "tuned"),
    Case("errors-0.3", "early", "tuned"),
    Case("errors-0.1", "early", "tuned"),
    Case("latency", "early", "tuned"),
)
READINESS = (Case("readiness", "default", "slow"), Case("readiness", "tuned", "once"))


# --- the stack -----------------------------------------------------------------------------


def write_config(root: Path, envs: dict[str, str]) -> Path:
    """``envs``: environment name -> one of ENVIRONMENTS (several names may share settings)."""
    shutil.copytree(
        EXAMPLES / "catalog",
        root / "services" / "catalog",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    lines = []
    for name, settings in envs.items():
        strategy, extra = ENVIRONMENTS[settings]
        lines.append(f"  {name}: {{strategy: {{canary: {{steps: {STEPS}{strategy}}}}}{extra}}}")
    path = root / "conveyor.yaml"
    path.write_text(CONFIG.format(environments="\n".join(lines)))
    return path


@asynccontextmanager
async def bench_stack(root: Path, envs: dict[str, str]) -> AsyncIterator[Stack]:
    config_file = write_config(root, envs)
    project = load_project(config_file)
    for name, settings in envs.items():
        if settings in DEFAULT_TRIGGERS:
            assert project.config.effective_rollback(name) == RollbackConfig(), name
    async with running(root, project, config_file, tick=TICK) as stack:
        yield stack


# --- one run -------------------------------------------------------------------------------


@dataclass
class Run:
    fault: str
    settings: str
    phase: str = ""
    trigger: str | None = None
    message: str | None = None
    step_index: int | None = None
    held: str | None = None  # the rollout was held for a human; the bench aborted it
    requests: int = 0  # deploy -> release.rolled_back
    failed: int = 0
    served_by_canary: int = 0
    failed_after_restore: int = 0
    canary_share: float | None = None  # of requests before the restore
    first_canary_request: float | None = None  # seconds after the deploy call
    first_user_failure: float | None = None
    first_signal: float | None = None  # first crash / HTTP readiness failure
    bad_since: float | None = None
    basis: str = ""
    detected: float | None = None  # the trigger fired
    restored: float | None = None  # traffic.switched rollback=True
    rolled_back: float | None = None
    time_to_rollback: float | None = None  # (a)
    from_first_canary_request: float | None = None  # (a) measured from the canary's first answer
    notes: list[str] = field(default_factory=list)

    @property
    def blast_pct(self) -> float:
        return 100.0 * self.failed / self.requests if self.requests else 0.0

    @property
    def blast_planned_pct(self) -> float:
        return 100.0 * self.failed / (RATE * PLANNED_SECONDS)


async def until_done(
    s: Stack, env: str, release: ReleaseRecord, run: Run, deployed_at: float
) -> ReleaseRecord:
    """Wait for the end; a rollout held for a human is aborted, as the human would, and noted."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        current = s.store.get_release(release.id)
        if current.phase in ("succeeded", "rolled_back", "failed"):
            return current
        paused = current.status.paused
        if paused and run.held is None:
            run.held = f"{time.time() - deployed_at:.1f}s after the deploy: {paused}"
            await s.app.control(Caller("bench"), "catalog", env, "abort")
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{release.name} still {s.store.get_release(release.id).phase}")


async def one_run(s: Stack, env: str, case: Case, n: int, v2: str) -> Run:
    stable = s.store.current_release("catalog", env)
    assert stable is not None
    await settled(s, env, stable.revision)
    run = Run(case.fault, case.env)
    load = LoadProcess(s.port(env), RATE)
    await load.start()
    await asyncio.sleep(WARMUP)
    signals: list[float] = []
    overrides = {**FAULTS[case.fault], "BENCH_RUN": str(n)}  # a distinct version per run
    deployed_at = time.time()
    bad = await s.deploy(env, v2, overrides=overrides)
    watcher = asyncio.create_task(watch_new(s, env, bad.revision, signals))
    try:
        final = await until_done(s, env, bad, run, deployed_at)
        await asyncio.sleep(TAIL)
    finally:
        watcher.cancel()
        outcomes = await load.stop()
    measure(run, s, final, outcomes, signals, deployed_at)
    return run


def measure(
    run: Run,
    s: Stack,
    bad: ReleaseRecord,
    outcomes: list[tuple[float, bool, str | None]],
    signals: list[float],
    deployed_at: float,
) -> None:
    run.phase = bad.phase
    abort = asdict(bad.status.abort) if bad.status.abort else {}
    run.trigger, run.message = abort.get("reason"), abort.get("message")
    run.step_index = bad.status.step_index
    if abort.get("at"):
        run.detected = abort["at"] - deployed_at
    events = s.store.events(release_id=bad.id)
    restores = [e.at for e in events if e.kind == "traffic.switched" and e.details.get("rollback")]
    done = [e.at for e in events if e.kind in ("release.rolled_back", "release.failed")]
    ended = done[0] if done else max(o[0] for o in outcomes)
    canary = str(bad.revision)
    during = [o for o in outcomes if deployed_at <= o[0] <= ended]
    failures = sorted(o[0] for o in outcomes if o[1] and o[0] >= deployed_at)
    served = sorted(o[0] for o in outcomes if o[2] == canary)
    run.requests = len(during)
    run.failed = sum(1 for o in during if o[1])
    run.served_by_canary = len(served)
    run.rolled_back = ended - deployed_at if done else None
    if served:
        run.first_canary_request = served[0] - deployed_at
    if failures:
        run.first_user_failure = failures[0] - deployed_at
    if signals:
        run.first_signal = min(signals) - deployed_at
    if restores:
        run.restored = restores[0] - deployed_at
        run.failed_after_restore = sum(1 for t in failures if t > restores[0])
        if served:  # while the canary took its share: from its first answer to the restore
            exposed = [o for o in during if served[0] <= o[0] <= restores[0]]
            run.canary_share = sum(1 for o in exposed if o[2] == canary) / len(exposed)
    elif served or failures:
        run.notes.append("users reached the canary but no rollback traffic switch")
    if not served and not failures:
        run.time_to_rollback, run.basis = 0.0, "never left stable"
        run.bad_since = run.first_signal
        return
    if run.fault == "latency":
        run.bad_since, run.basis = run.first_canary_request, "first slow (canary) request"
    else:
        starts = {"first user failure": run.first_user_failure, "first crash": run.first_signal}
        known = {k: v for k, v in starts.items() if v is not None}
        if known:
            run.basis = min(known, key=lambda k: known[k])
            run.bad_since = known[run.basis]
    if run.restored is not None:
        if run.bad_since is not None:
            run.time_to_rollback = run.restored - run.bad_since
            if run.time_to_rollback < 0:  # the controller saw the crash before the watcher did
                run.notes.append(f"restored {-run.time_to_rollback:.3f}s before the watcher saw it")
                run.time_to_rollback = 0.0
        if run.first_canary_request is not None:
            run.from_first_canary_request = run.restored - run.first_canary_request


# --- plans ---------------------------------------------------------------------------------


def runs_for(case: Case, args: argparse.Namespace) -> int:
    counts: dict[str, int] = {
        "fast": args.runs,
        "slow": args.slow_runs,
        "tuned": args.tuned_runs,
        "once": 1,
    }
    return counts[case.runs]


async def sequential(workdir: Path, args: argparse.Namespace, cases: list[Case]) -> list[Run]:
    """Faults caught in seconds: one run at a time, cases interleaved so drift hits all alike."""
    envs = {c.env: c.env for c in cases}
    out: list[Run] = []
    async with bench_stack(workdir / "seq", envs) as s:
        v1, v2 = await s.build("v1"), await s.build("v2")
        firsts = [await s.deploy(env, v1) for env in envs]
        for first in firsts:
            assert (await s.wait(first)).phase == "succeeded", first.status
        n = 0
        for rep in range(max(runs_for(c, args) for c in cases)):
            for case in cases:
                if rep < runs_for(case, args):
                    n += 1
                    run = await one_run(s, case.env, case, n, v2)
                    out.append(run)
                    progress(run, rep)
    return out


async def side_by_side(workdir: Path, args: argparse.Namespace, cases: list[Case]) -> list[Run]:
    """Faults that wait out a progress deadline share the wall clock, one environment each."""
    plan = [(f"r{i}-{c.env}", c) for c in cases for i in range(runs_for(c, args))]
    envs = {name: case.env for name, case in plan}
    async with bench_stack(workdir / "side", envs) as s:
        v1, v2 = await s.build("v1"), await s.build("v2")
        firsts = [await s.deploy(env, v1) for env in envs]
        await asyncio.gather(*(s.wait(first) for first in firsts))
        runs = await asyncio.gather(
            *(one_run(s, name, case, i, v2) for i, (name, case) in enumerate(plan))
        )
    for run in runs:
        progress(run, 0)
    return list(runs)


def progress(run: Run, rep: int) -> None:
    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}s"

    print(
        f"  #{rep + 1} {run.settings:12} {run.fault:10} {run.trigger or run.phase:17} "
        f"(a) {fmt(run.time_to_rollback):>6} [{run.basis}]  from 1st canary req "
        f"{fmt(run.from_first_canary_request):>6}  detected {fmt(run.detected)}  "
        f"rolled back {fmt(run.rolled_back)}  (c) {run.failed}/{run.requests}"
        f"{'  held ' + run.held if run.held else ''}{'; ' if run.notes else ''}"
        f"{'; '.join(run.notes)}",
        flush=True,
    )


# --- report --------------------------------------------------------------------------------


def _median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 3) if present else None


def _range(values: Iterable[float | None]) -> list[float] | None:
    present = [v for v in values if v is not None]
    return [round(min(present), 3), round(max(present), 3)] if present else None


def summarize(runs: list[Run]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.settings, run.fault), []).append(run)
    rows = []
    for (settings, fault), group in groups.items():
        rows.append(
            {
                "settings": settings,
                "fault": fault,
                "runs": len(group),
                "triggers": sorted({r.trigger or r.phase for r in group}),
                "held": sum(1 for r in group if r.held),
                "basis": sorted({r.basis for r in group}),
                "time_to_rollback": _median(r.time_to_rollback for r in group),
                "time_to_rollback_range": _range(r.time_to_rollback for r in group),
                "from_first_canary_request": _median(r.from_first_canary_request for r in group),
                "first_canary_request": _median(r.first_canary_request for r in group),
                "detected": _median(r.detected for r in group),
                "restored": _median(r.restored for r in group),
                "deploy_to_rolled_back": _median(r.rolled_back for r in group),
                "failed": _median(r.failed for r in group),
                "failed_range": _range(r.failed for r in group),
                "requests": _median(r.requests for r in group),
                "served_by_canary": _median(r.served_by_canary for r in group),
                "canary_share_pct": _median(
                    None if r.canary_share is None else 100 * r.canary_share for r in group
                ),
                "blast_pct": _median(r.blast_pct for r in group),
                "blast_planned_pct": _median(r.blast_planned_pct for r in group),
                "max_step_index": max((r.step_index or 0) for r in group),
                "failed_after_restore": sum(r.failed_after_restore for r in group),
            }
        )
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    def s(value: float | None, unit: str = "s") -> str:
        return "-" if value is None else f"{value:.1f}{unit}"

    head = (
        f"{'settings':12} {'fault':10} {'runs':>4} {'trigger':17} {'(a) bad->stable':>16} "
        f"{'1st canary->':>12} {'detect':>7} {'->rb':>6} {'(c) failed/total':>17} "
        f"{'of 9000':>7} {'canary':>7}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        a = s(r["time_to_rollback"])
        if r["time_to_rollback_range"]:
            low, high = r["time_to_rollback_range"]
            a += f" ({low:.1f}-{high:.1f})"
        c = f"{r['failed']:g}/{r['requests']:g} ({r['blast_pct']:.2f}%)"
        print(
            f"{r['settings']:12} {r['fault']:10} {r['runs']:>4} {'/'.join(r['triggers']):17} "
            f"{a:>16} {s(r['from_first_canary_request']):>12} {s(r['detected']):>7} "
            f"{s(r['deploy_to_rolled_back']):>6} {c:>17} {r['blast_planned_pct']:>6.3f}% "
            f"{s(r['canary_share_pct'], '%'):>7}{'  held' if r['held'] else ''}"
        )


async def main_async(args: argparse.Namespace) -> list[Run]:
    workdir = Path(tempfile.mkdtemp(prefix="conveyor-canarybench-"))
    chosen = [c for c in CASES if c.fault in args.faults and c.env in args.settings]
    ready = [c for c in READINESS if c.fault in args.faults and c.env in args.settings]
    runs: list[Run] = []
    try:
        if chosen:
            print("faults caught in seconds, one run at a time:", flush=True)
            runs += await sequential(workdir, args, chosen)
        if ready:
            print("readiness faults, side by side:", flush=True)
            runs += await side_by_side(workdir, args, ready)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per fast default case")
    parser.add_argument("--slow-runs", type=int, default=3, help="runs of latency and readiness")
    parser.add_argument("--tuned-runs", type=int, default=3, help="runs per tuned case")
    parser.add_argument("--quick", action="store_true", help="2 runs per fast case, else 1")
    parser.add_argument("--faults", nargs="+", choices=list(FAULTS), default=list(FAULTS))
    parser.add_argument(
        "--settings", nargs="+", choices=list(ENVIRONMENTS), default=list(ENVIRONMENTS)
    )
    args = parser.parse_args()
    if args.quick:
        args.runs, args.slow_runs, args.tuned_runs = 2, 1, 1
    started = time.monotonic()
    env = machine()
    runs = asyncio.run(main_async(args))
    rows = summarize(runs)
    seconds = time.monotonic() - started
    print(f"\nmedians over runs ({seconds:.0f}s in all; times in seconds after the deploy):")
    print_table(rows)
    out = RESULTS / "canary.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "command": " ".join([Path(sys.executable).name, *sys.argv]),
                "machine": env,
                "seconds": round(seconds, 1),
                "rate": RATE,
                "steps": STEPS,
                "planned_seconds": PLANNED_SECONDS,
                "rollback_defaults": RollbackConfig().model_dump(),
                "environments": {k: "".join(v) for k, v in ENVIRONMENTS.items()},
                "summary": rows,
                "runs": [
                    {
                        **asdict(r),
                        "blast_pct": r.blast_pct,
                        "blast_planned_pct": r.blast_planned_pct,
                    }
                    for r in runs
                ],
            },
            indent=2,
        )
        + "\n"
    )
    print(f"raw runs: {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
