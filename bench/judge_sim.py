"""The judges at their defaults, by simulation: false rollbacks, time to decision, requests needed.

Run: .venv/bin/python bench/judge_sim.py [--healthy 10000] [--faulty 200] [--long 400]
     [--table-runs 200] [--workers 2] [--seed 1] [--quick]

Every canary is tests/core_analysis/canary_model.py: Poisson requests at 40 or 50/s, a canary
at 5% then 50% (30 s each) then promoted and verified 15 s, the error-rate trigger every
0.2 s tick and a background analysis (compare_error_rate + compare_latency, defaults, every
5 s). Nothing is timed: the model's clock is simulated, so the figures are the judges', not
the machine's. Printed:

1. false rollbacks over ``--healthy`` healthy canaries (stable and canary both 0.5% errors,
   p95 2.6 ms against 4.1 ms, outliers, cold starts), by judge, with a 95% upper bound;
2. time from the canary's first answer to the rollback for 20% and 30% errors and +300 ms,
   at 5% of 40 and 50 req/s: median, p10, p90, max, and the weight it happened at; and how
   long healthy canaries take to pass each comparison;
3. false rollbacks of healthy canaries held at 5% for 30 minutes (a ``pause: {}`` nobody
   answers), at several traffic levels: alpha spending keeps this bounded;
4. the table of docs/canary.md: requests (and seconds) a canary held at 5% needs before
   ``compare_error_rate`` passes or fails it, and before the trigger fails it.

Raw numbers go to bench/results/judge_sim.json (gitignored).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "src"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from tests.core_analysis.canary_model import (  # noqa: E402
    HEALTHY,
    STABLE,
    Outcome,
    Scenario,
    Version,
    erroring,
    slower,
)

from conveyor.core.judge import compare_error_rate  # noqa: E402

RESULTS = REPO / "bench" / "results"


def _runs(args: tuple[Scenario, int, int]) -> list[Outcome]:
    scenario, seed, count = args
    rng = random.Random(seed)
    return [scenario.run(rng) for _ in range(count)]


def simulate(
    pool: ProcessPoolExecutor, scenario: Scenario, runs: int, seed: int, chunk: int = 250
) -> list[Outcome]:
    jobs = [(scenario, seed * 1_000_003 + i, min(chunk, runs - i)) for i in range(0, runs, chunk)]
    return [outcome for part in pool.map(_runs, jobs) for outcome in part]


def upper_95(failures: int, runs: int) -> float:
    """Clopper-Pearson 95% upper bound of a rate, by bisection on the binomial tail."""
    if failures >= runs:
        return 1.0
    low, high = failures / runs, 1.0
    for _ in range(60):
        mid = (low + high) / 2
        cdf = sum(
            math.comb(runs, k) * mid**k * (1 - mid) ** (runs - k) for k in range(failures + 1)
        )
        low, high = (mid, high) if cdf > 0.025 else (low, mid)
    return high


def spread(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"n": 0, "median": None, "p10": None, "p90": None, "max": None}
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {
        "n": len(ordered),
        "median": statistics.median(ordered),
        "p10": at(0.10),
        "p90": at(0.90),
        "max": ordered[-1],
    }


def show(values: dict[str, float | None], unit: str = "s") -> str:
    if not values["n"]:
        return "never"
    return (
        f"median {values['median']:.1f}{unit}  p10 {values['p10']:.1f}  p90 {values['p90']:.1f}  "
        f"max {values['max']:.1f}  (n={values['n']})"
    )


def healthy(pool: ProcessPoolExecutor, runs: int, seed: int, report: dict[str, Any]) -> None:
    print(f"\n1. False rollbacks of {runs} healthy canaries per traffic level (defaults)")
    for rate in (50.0, 40.0):
        outcomes = simulate(pool, Scenario(canary=HEALTHY, rate=rate), runs, seed + int(rate))
        failed = [o for o in outcomes if o.failed_by]
        by: dict[str, int] = {}
        for o in failed:
            by[o.failed_by or ""] = by.get(o.failed_by or "", 0) + 1
        bound = upper_95(len(failed), runs)
        print(
            f"   {rate:.0f} req/s: {len(failed)}/{runs} = {len(failed) / runs:.3%} "
            f"(95% upper bound {bound:.3%}); by judge {by or 'none'}"
        )
        for o in failed[:5]:
            print(f"      at {o.weight}% after {o.decided_after:.1f}s: {o.detail[:140]}")
        passes = {
            name: spread([o.passed_after[name] for o in outcomes if name in o.passed_after])
            for name in ("errors", "latency")
        }
        for name, values in passes.items():
            share = values["n"] / runs if values["n"] else 0.0
            print(f"      first pass of compare_{name}: {share:.1%} of runs, {show(values)}")
        report[f"healthy_{rate:.0f}"] = {
            "runs": runs,
            "false_rollbacks": len(failed),
            "upper_95": bound,
            "by": by,
            "examples": [asdict(o) for o in failed[:20]],
            "passes": passes,
        }


def faulty(pool: ProcessPoolExecutor, runs: int, seed: int, report: dict[str, Any]) -> None:
    print(f"\n2. Time from the canary's first answer to its rollback ({runs} runs each)")
    faults: dict[str, Version] = {
        "20% errors": erroring(0.20),
        "30% errors": erroring(0.30),
        "+300 ms": slower(0.300),
    }
    for name, version in faults.items():
        for rate in (50.0, 40.0):
            outcomes = simulate(pool, Scenario(canary=version, rate=rate), runs, seed + int(rate))
            times = [o.decided_after for o in outcomes if o.decided_after is not None]
            at_first = sum(1 for o in outcomes if o.weight == 5)
            by: dict[str, int] = {}
            for o in outcomes:
                by[o.failed_by or "not"] = by.get(o.failed_by or "not", 0) + 1
            values = spread(times)
            print(
                f"   {name:10} at 5% of {rate:.0f} req/s: {show(values)}; "
                f"rolled back at the 5% step in {at_first}/{runs}; by {by}"
            )
            report[f"{name} @ {rate:.0f}"] = {**values, "at_first_step": at_first, "by": by}


def long_pause(pool: ProcessPoolExecutor, runs: int, seed: int, report: dict[str, Any]) -> None:
    print(f"\n3. Healthy canaries held at 5% for 30 min ({runs} runs per traffic level)")
    for rate in (4.0, 10.0, 20.0, 50.0, 200.0):
        scenario = Scenario(canary=HEALTHY, rate=rate, steps=((5, 1800.0),))
        outcomes = simulate(pool, scenario, runs, seed + int(rate), chunk=20)
        failed = [o for o in outcomes if o.failed_by]
        by: dict[str, int] = {}
        for o in failed:
            by[o.failed_by or ""] = by.get(o.failed_by or "", 0) + 1
        print(
            f"   {rate:5.0f} req/s ({rate * 0.05:.1f}/s on the canary): {len(failed)}/{runs} "
            f"false rollbacks (95% upper bound {upper_95(len(failed), runs):.2%}); {by or ''}"
        )
        report[f"paused_30min_{rate:.0f}"] = {
            "runs": runs,
            "false_rollbacks": len(failed),
            "by": by,
        }


def table(pool: ProcessPoolExecutor, runs: int, seed: int, report: dict[str, Any]) -> None:
    print(
        f"\n4. A canary held at 5% (stable at 0.5% errors): median canary requests (seconds) "
        f"until compare_error_rate decides, and until the trigger fails it ({runs} runs)"
    )
    rates = (10.0, 50.0, 200.0)
    print("   canary errors | " + " | ".join(f"at {r:.0f} req/s" for r in rates))
    rows: dict[str, Any] = {}
    for errors in (0.0, 0.005, 0.01, 0.02, 0.05, 0.10, 0.20, 0.30):
        cells = []
        for rate in rates:
            version = replace(HEALTHY, error_rate=errors, outliers=0.0, cold=0)
            scenario = Scenario(canary=version, rate=rate, steps=((5, 900.0),))
            outcomes = simulate(pool, scenario, runs, seed + int(rate * 1000 + errors * 1e4), 25)
            cell = _cell(outcomes, rate)
            cells.append(cell)
            rows[f"{errors:.3f} @ {rate:.0f}"] = cell
        print(f"   {errors:13.1%} | " + " | ".join(c["text"] for c in cells))
    report["table"] = rows
    print("\n   The issue's example, 0/51 against 0/168 at max_delta 1%, and its neighbours:")
    for canary, stable in ((51, 168), (100, 330), (150, 500), (200, 660), (300, 1000)):
        verdict = compare_error_rate(0, canary, 0, stable, max_delta=0.01, alpha=0.05, beta=0.05)
        print(f"      0/{canary} vs 0/{stable}: {verdict.outcome}: {verdict.detail}")


def _cell(outcomes: Sequence[Outcome], rate: float) -> dict[str, Any]:
    canary_rate = rate * 0.05
    fails = [o for o in outcomes if o.failed_by]
    trigger = [o.canary_requests for o in fails if o.failed_by == "error-rate"]
    analysis = [o.canary_requests for o in fails if o.failed_by == "errors"]
    passes = [o.passed_after["errors"] for o in outcomes if "errors" in o.passed_after]
    parts = []
    if passes and len(passes) * 2 > len(outcomes):
        seconds = statistics.median(passes)
        parts.append(f"pass {seconds * canary_rate:.0f} ({seconds:.0f}s)")
    if fails and len(fails) * 2 > len(outcomes):
        seconds = statistics.median(o.decided_after or 0.0 for o in fails)
        who = "trigger" if len(trigger) >= len(analysis) else "analysis"
        requests = statistics.median(o.canary_requests for o in fails)
        parts.append(f"fail {requests:.0f} ({seconds:.0f}s, {who})")
    text = ", ".join(parts) or "undecided in 15 min"
    return {
        "text": text,
        "passed": len(passes),
        "failed": len(fails),
        "trigger": len(trigger),
        "analysis": len(analysis),
        "runs": len(outcomes),
    }


def main(argv: Iterable[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--healthy", type=int, default=10_000)
    parser.add_argument("--faulty", type=int, default=200)
    parser.add_argument("--long", type=int, default=200)
    parser.add_argument("--table-runs", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="a few runs of everything")
    parser.add_argument("--only", choices=("healthy", "faulty", "long", "table"), default=None)
    args = parser.parse_args(list(argv) if argv is not None else None)
    if args.quick:
        args.healthy, args.faulty, args.long, args.table_runs = 400, 30, 10, 10
    print(f"stable: {STABLE}\nhealthy canary: {HEALTHY}")
    report: dict[str, Any] = {"args": vars(args)}
    started = time.perf_counter()
    steps: dict[str, Callable[[ProcessPoolExecutor, int, int, dict[str, Any]], None]] = {
        "healthy": healthy,
        "faulty": faulty,
        "long": long_pause,
        "table": table,
    }
    sizes = {"healthy": args.healthy, "faulty": args.faulty, "long": args.long}
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        for name, step in steps.items():
            if args.only in (None, name):
                step(pool, sizes.get(name, args.table_runs), args.seed, report)
    print(f"\n({time.perf_counter() - started:.0f}s of CPU-bound simulation)")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "judge_sim.json").write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
