"""Engine overhead: a 200-job DAG of no-op jobs, overhead per job = (wall - ideal) / jobs.

Run: .venv/bin/python bench/pipeline_bench.py [--jobs 200] [--runs 3]

The DAG is layered: 20 layers of 10 jobs, each job needing two jobs of the layer before
(so planning, readiness checks and skip decisions all do real work). Every job is ``true``,
so the ideal wall time is 0 and everything measured is overhead: planning, process spawn
in its own session, output pipe, the $CONVEYOR_OUTPUT file, process-group sweep, results.

Rows: exec'd ``["true"]`` and shell ``sh -c true``, each at the default parallelism (CPU
count) and at max_parallel=1. For scale, the last row is the bare cost of spawning ``true``
200 times in a row with subprocess.run (no engine at all). Median of --runs runs; raw runs
go to bench/results/pipeline.json (gitignored).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from conveyor.pipeline import PipelineSpec, build_plan, run_pipeline

TARGET_MS = 20.0


def dag(jobs: int, run: str | list[str], width: int = 10) -> PipelineSpec:
    spec: dict[str, dict[str, object]] = {}
    for index in range(jobs):
        layer, slot = divmod(index, width)
        needs = []
        if layer:
            previous = (layer - 1) * width
            needs = [f"j{previous + slot}", f"j{previous + (slot + 1) % width}"]
        spec[f"j{index}"] = {"run": run, "needs": needs}
    return PipelineSpec.model_validate({"jobs": spec})


def measure(spec: PipelineSpec, workdir: Path, max_parallel: int | None) -> float:
    started = time.perf_counter()
    result = run_pipeline(build_plan(spec), workdir, max_parallel=max_parallel)
    wall = time.perf_counter() - started
    assert result.result == "success", [j.reason for j in result.jobs if j.result != "success"]
    return wall


def bare_spawns(jobs: int) -> float:
    started = time.perf_counter()
    for _ in range(jobs):
        subprocess.run(["true"], check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    rows: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as temp:
        workdir = Path(temp)
        cases = [
            ("exec true, parallel=cpu", dag(args.jobs, ["true"]), None),
            ("exec true, parallel=1", dag(args.jobs, ["true"]), 1),
            ("sh -c true, parallel=cpu", dag(args.jobs, "true"), None),
            ("sh -c true, parallel=1", dag(args.jobs, "true"), 1),
        ]
        for label, spec, parallel in cases:
            rows[label] = [measure(spec, workdir, parallel) for _ in range(args.runs)]
    rows["bare subprocess.run(true), serial"] = [bare_spawns(args.jobs) for _ in range(args.runs)]
    print(f"{args.jobs} no-op jobs, {os.cpu_count()} CPUs, median of {args.runs} runs")
    print(f"{'case':38} {'wall s':>8} {'ms/job':>8}")
    for label, walls in rows.items():
        wall = statistics.median(walls)
        per_job = wall / args.jobs * 1000
        flag = "" if label.startswith("bare") else (" ok" if per_job < TARGET_MS else " OVER")
        print(f"{label:38} {wall:8.3f} {per_job:8.2f}{flag}")
    print(f"target: < {TARGET_MS:g} ms overhead per job (ideal wall time is 0: jobs do nothing)")
    out = Path(__file__).parent / "results" / "pipeline.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"jobs": args.jobs, "cpus": os.cpu_count(), "runs": rows}, indent=2))


if __name__ == "__main__":
    main()
