"""Failed user requests per bad canary, with and without retries on stable; healthy canaries.

Run: .venv/bin/python bench/canary_retries_bench.py [--runs 5] [--healthy 0] [--parallel 4]

Part 1 (``--runs`` per setting, the settings alternating): a healthy v1 serves 50 GET/s
from a load process of its own (bench/rollback_bench.py's); a v2 answering 20% of its
requests with 500 (``FAULT_ERROR_RATE=0.2``) is deployed as a canary with the steps
``[set_weight: 5, pause: 60s, set_weight: 25, pause: 60s, set_weight: 50, pause: 60s]`` and
the default rollback triggers; Conveyor rolls it back on its own. Two environments differ
only in ``retries:``: the default (a canary's failed GET answered by stable), and
``retries: {methods: []}`` (off: what users got before). Per run: failed user requests from
the deploy to ``release.rolled_back``, requests the canary answered, the canary's failures
the router counted (what the trigger judged) and retried, and the time from the canary's
first answer to traffic back on stable.

Part 2 (``--healthy N``): N healthy canaries through the real stack, ``--parallel`` at
a time in separate environments: stable and canary both answer 0.5% errors, the canary
3 ms slower or faster than stable (``FAULT_LATENCY_MS``), 40 GET/s each, steps
``[set_weight: 5, pause: 20s, set_weight: 50, pause: 20s]``, default triggers and a
background analysis of ``compare_error_rate`` and ``compare_latency`` at their defaults
(every 5 s). Counted: how many were rolled back (false rollbacks), held for a human, or
passed. The issue's target is 100 canaries at 5% then 50% with 30 s pauses; the pauses
are shortened to fit a shared 2-CPU box, which gives the judges fewer chances to err, so
this is a lower bound on the false-rollback rate of the 30 s plan (bench/judge_sim.py
simulates the full plan).

Raw runs go to bench/results/canary_retries.json, or canary_healthy.json for part 2 alone
(gitignored).
"""

from __future__ import annotations

import argparse
import asyncio
import json
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

from bench.rollback_bench import LoadProcess, machine, running, settled  # noqa: E402
from tests.controller.harness import EXAMPLES, Stack  # noqa: E402

from conveyor.application import Caller  # noqa: E402
from conveyor.config.loader import load_project  # noqa: E402
from conveyor.config.schema import RollbackConfig  # noqa: E402
from conveyor.store.records import ReleaseRecord  # noqa: E402

RESULTS = REPO / "bench" / "results"
RATE = 50
HEALTHY_RATE = 40
WARMUP = 1.0
TAIL = 0.5
BAD_STEPS = (
    "[{set_weight: 5}, {pause: 60s}, {set_weight: 25}, {pause: 60s}, "
    "{set_weight: 50}, {pause: 60s}]"
)
HEALTHY_STEPS = "[{set_weight: 5}, {pause: 20s}, {set_weight: 50}, {pause: 20s}]"
FAULT = {"FAULT_ERROR_RATE": "0.2"}
HEALTHY_STABLE = {"FAULT_ERROR_RATE": "0.005"}

CONFIG = """\
project: retrybench
analysis:
  compare:
    interval: 5s
    count: 12
    metrics:
      - {{name: errors-vs-stable, provider: builtin, query: compare_error_rate}}
      - {{name: p95-vs-stable, provider: builtin, query: compare_latency}}
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


def write_config(root: Path, envs: dict[str, str]) -> Path:
    """``envs``: environment name -> its YAML flow mapping."""
    import shutil

    shutil.copytree(
        EXAMPLES / "catalog",
        root / "services" / "catalog",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    lines = [f"  {name}: {body}" for name, body in envs.items()]
    path = root / "conveyor.yaml"
    path.write_text(CONFIG.format(environments="\n".join(lines)))
    return path


@asynccontextmanager
async def bench_stack(root: Path, envs: dict[str, str]) -> AsyncIterator[Stack]:
    config_file = write_config(root, envs)
    project = load_project(config_file)
    for name in envs:
        # The point: the triggers users get when they configure nothing.
        assert project.config.effective_rollback(name) == RollbackConfig(), name
    async with running(root, project, config_file, tick=0.2) as stack:
        yield stack


async def until_done(s: Stack, release: ReleaseRecord, timeout: float = 240) -> ReleaseRecord:
    """The end of a rollout; one held for a human is left held (the caller decides)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = s.store.get_release(release.id)
        if current.phase.terminal or current.status.paused:
            return current
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{release.name} still {s.store.get_release(release.id).phase}")


# --- part 1: a bad canary ----------------------------------------------------------------


@dataclass
class BadRun:
    setting: str
    phase: str = ""
    trigger: str | None = None
    requests: int = 0
    failed: int = 0
    canary_answers: int = 0  # user requests the canary answered (successfully)
    canary_errors: int = 0  # failures the router counted for the canary (what was judged)
    canary_retried: int = 0
    first_answer_to_stable: float | None = None
    deploy_to_rolled_back: float | None = None
    notes: list[str] = field(default_factory=list)


async def bad_run(s: Stack, env: str, n: int, v2: str) -> BadRun:
    stable = s.store.current_release("catalog", env)
    assert stable is not None
    await settled(s, env, stable.revision)
    run = BadRun(env)
    load = LoadProcess(s.port(env), RATE)
    await load.start()
    await asyncio.sleep(WARMUP)
    deployed_at = time.time()
    bad = await s.deploy(env, v2, overrides={**FAULT, "BENCH_RUN": str(n)})
    final = await until_done(s, bad)
    if not final.phase.terminal:
        run.notes.append(f"held: {final.status.paused}")
        await s.app.control(Caller("bench"), "catalog", env, "abort")
        final = await until_done(s, bad)
    await asyncio.sleep(TAIL)
    outcomes = await load.stop()
    run.phase = str(final.phase)
    abort = final.status.abort
    run.trigger = abort.reason if abort else None
    events = s.store.events(release_id=bad.id)
    restores = [e.at for e in events if e.kind == "traffic.switched" and e.details.get("rollback")]
    done = [e.at for e in events if e.kind in ("release.rolled_back", "release.failed")]
    ended = done[0] if done else max(o[0] for o in outcomes)
    during = [o for o in outcomes if deployed_at <= o[0] <= ended]
    canary = str(bad.revision)
    served = sorted(o[0] for o in during if o[2] == canary)
    run.requests = len(during)
    run.failed = sum(1 for o in during if o[1])
    run.canary_answers = len(served)
    if done:
        run.deploy_to_rolled_back = ended - deployed_at
    if served and restores:
        run.first_answer_to_stable = restores[0] - served[0]
    counters = s.controller.router_for("builtin").counters("catalog", env)
    seen = counters.get(final.rollout_spec().version)
    if seen is not None:
        run.canary_errors, run.canary_retried = seen.errors, seen.retried
    return run


async def part_bad(workdir: Path, runs: int) -> list[BadRun]:
    envs = {
        "retries": f"{{strategy: {{canary: {{steps: {BAD_STEPS}}}}}}}",
        "noretries": f"{{strategy: {{canary: {{steps: {BAD_STEPS}}}}}, retries: {{methods: []}}}}",
    }
    results: list[BadRun] = []
    async with bench_stack(workdir, envs) as s:
        v1, v2 = await s.build("v1"), await s.build("v2")
        for env in envs:
            await s.wait(await s.deploy(env, v1))
        for n in range(runs):
            for env in envs if n % 2 == 0 else reversed(list(envs)):
                run = await bad_run(s, env, n, v2)
                results.append(run)
                print(
                    f"  {env:9} run {n + 1}: {run.phase}/{run.trigger}, failed {run.failed}"
                    f"/{run.requests}, canary answered {run.canary_answers}, counted "
                    f"{run.canary_errors} errors ({run.canary_retried} retried), first answer"
                    f" -> stable {_fmt(run.first_answer_to_stable)} s {run.notes or ''}",
                    flush=True,
                )
    return results


# --- part 2: healthy canaries --------------------------------------------------------------


@dataclass
class HealthyRun:
    env: str
    phase: str = ""
    trigger: str | None = None
    message: str | None = None
    held: str | None = None
    seconds: float = 0.0


async def healthy_run(s: Stack, env: str, n: int, v2: str) -> HealthyRun:
    stable = s.store.current_release("catalog", env)
    assert stable is not None
    await settled(s, env, stable.revision)
    load = LoadProcess(s.port(env), HEALTHY_RATE)
    await load.start()
    await asyncio.sleep(WARMUP)
    started = time.time()
    # The canary differs from whatever stable is by 3 ms: slower after a fast stable, faster
    # after a slow one (a healthy canary that passed is the next one's stable).
    latency = "0" if stable.config.get("FAULT_LATENCY_MS", "0") != "0" else "3"
    overrides = {**HEALTHY_STABLE, "FAULT_LATENCY_MS": latency, "BENCH_RUN": str(n)}
    release = await s.deploy(env, v2, overrides=overrides)
    final = await until_done(s, release)
    run = HealthyRun(env)
    if not final.phase.terminal:
        run.held = str(final.status.paused)
        await s.app.control(Caller("bench"), "catalog", env, "abort")
        final = await until_done(s, release)
    await load.stop()
    run.seconds = time.time() - started
    run.phase = str(final.phase)
    if final.status.abort and run.held is None:
        run.trigger, run.message = final.status.abort.reason, final.status.abort.message
    return run


async def part_healthy(workdir: Path, count: int, parallel: int) -> list[HealthyRun]:
    body = f"{{strategy: {{canary: {{steps: {HEALTHY_STEPS}, analysis: compare}}}}}}"
    envs = {f"h{i}": body for i in range(parallel)}
    results: list[HealthyRun] = []
    async with bench_stack(workdir, envs) as s:
        v1, v2 = await s.build("v1"), await s.build("v2")
        first = [await s.deploy(env, v1, overrides=HEALTHY_STABLE) for env in envs]
        await asyncio.gather(*(s.wait(release) for release in first))
        queue = list(range(count))

        async def worker(env: str) -> None:
            while queue:
                n = queue.pop(0)
                run = await healthy_run(s, env, n, v2)
                results.append(run)
                verdict = run.phase if run.held is None else f"held ({run.held})"
                print(
                    f"  healthy {len(results):3}/{count} [{env}]: {verdict} "
                    f"{run.trigger or ''} {run.message or ''} ({run.seconds:.0f} s)",
                    flush=True,
                )

        await asyncio.gather(*(worker(env) for env in envs))
    return results


# --- report --------------------------------------------------------------------------------


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _median(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def _span(values: Iterable[float | None]) -> str:
    known = [v for v in values if v is not None]
    return f"{min(known):g}-{max(known):g}" if known else "-"


def report_bad(runs: list[BadRun]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    print("\nFailed user requests per bad canary (20% errors, 5% of 50 req/s), medians [range]")
    print(
        "setting    | runs | failed GETs     | canary answered | counted errors | retried   "
        "| first answer -> stable | deploy -> rolled back"
    )
    for setting in ("retries", "noretries"):
        mine = [r for r in runs if r.setting == setting]
        if not mine:
            continue
        row = {
            "runs": len(mine),
            "rolled_back": sum(r.phase == "rolled_back" for r in mine),
            "failed": _median(r.failed for r in mine),
            "failed_range": _span(r.failed for r in mine),
            "canary_answers": _median(r.canary_answers for r in mine),
            "canary_errors": _median(r.canary_errors for r in mine),
            "canary_errors_range": _span(r.canary_errors for r in mine),
            "retried": _median(r.canary_retried for r in mine),
            "first_answer_to_stable": _median(r.first_answer_to_stable for r in mine),
            "first_answer_range": _span(
                round(r.first_answer_to_stable, 1) for r in mine if r.first_answer_to_stable
            ),
            "deploy_to_rolled_back": _median(r.deploy_to_rolled_back for r in mine),
        }
        summary[setting] = row
        print(
            f"{setting:10} | {row['rolled_back']}/{row['runs']}  | {row['failed']:g} "
            f"[{row['failed_range']}]{'':6} | {row['canary_answers']:g}{'':14}| "
            f"{row['canary_errors']:g} [{row['canary_errors_range']}]{'':4}| "
            f"{row['retried']:g}{'':8}| {_fmt(row['first_answer_to_stable'])} s "
            f"[{row['first_answer_range']}]{'':6}| {_fmt(row['deploy_to_rolled_back'])} s"
        )
    return summary


def report_healthy(runs: list[HealthyRun]) -> dict[str, Any]:
    count = len(runs)
    rolled = [r for r in runs if r.phase == "rolled_back" and r.held is None]
    held = [r for r in runs if r.held is not None]
    passed = [r for r in runs if r.phase == "succeeded"]
    print(
        f"\nHealthy canaries: {count} run, {len(passed)} passed, {len(rolled)} rolled back "
        f"(false rollbacks), {len(held)} held for a human"
    )
    for r in rolled:
        print(f"  rolled back: {r.trigger}: {r.message}")
    return {
        "count": count,
        "passed": len(passed),
        "false_rollbacks": len(rolled),
        "held": len(held),
        "reasons": [f"{r.trigger}: {r.message}" for r in rolled],
        "median_seconds": _median(r.seconds for r in runs),
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"machine": machine(), "args": vars(args)}
    if args.runs:
        with tempfile.TemporaryDirectory(prefix="retrybench-") as tmp:
            bad = await part_bad(Path(tmp), args.runs)
        out["bad"] = [asdict(r) for r in bad]
        out["bad_summary"] = report_bad(bad)
    if args.healthy:
        with tempfile.TemporaryDirectory(prefix="retrybench-healthy-") as tmp:
            healthy = await part_healthy(Path(tmp), args.healthy, args.parallel)
        out["healthy"] = [asdict(r) for r in healthy]
        out["healthy_summary"] = report_healthy(healthy)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="bad canaries per setting")
    parser.add_argument("--healthy", type=int, default=0, help="healthy canaries (part 2)")
    parser.add_argument("--parallel", type=int, default=4, help="healthy canaries at a time")
    args = parser.parse_args()
    out = asyncio.run(main_async(args))
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / ("canary_retries.json" if args.runs else "canary_healthy.json")
    path.write_text(json.dumps(out, indent=2, default=str))
    print(f"\nraw runs: {path.relative_to(REPO)}")


if __name__ == "__main__":
    main()
