"""Cached re-run versus cold run of an example pipeline (examples/pipelines/billing).

Run: .venv/bin/python bench/pipeline_cache_bench.py [--runs 3] [--service billing]

Each run starts from a fresh copy of the service directory, as a CI checkout does, so the
only thing a re-run can reuse is the pipeline cache. Cold: empty cache, the ``deps`` job
builds its stand-in install (examples/pipelines/tools/make_deps.py, CPU-bound like compiling
native code). Cached: the same pipeline against the cache a previous run saved, so ``deps``
restores ``.deps/`` and finds it complete. Rows are the whole pipeline (deps, lint, test,
build; lint and test are fixed costs the cache does not touch) and the cached job alone.
Median of --runs; raw runs go to bench/results/pipeline_cache.json (gitignored).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
from pathlib import Path

from conveyor.config.loader import load_project
from conveyor.pipeline import RunResult, run_pipeline

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "pipelines"
TARGET = 10.0


def one_run(workspace: Path, service: str, cache: Path, label: str) -> RunResult:
    """A fresh checkout of the examples, then the service's pipeline against ``cache``."""
    checkout = workspace / label
    shutil.copytree(EXAMPLES, checkout, ignore=shutil.ignore_patterns(".conveyor", ".deps"))
    spec = load_project(checkout / service / "conveyor.yaml").config.pipeline
    assert spec is not None
    result = run_pipeline(spec, checkout / service, cache_dir=cache)
    if result.result != "success":
        raise SystemExit(f"{label}: pipeline failed: {[(j.name, j.reason) for j in result.jobs]}")
    shutil.rmtree(checkout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--service", default="billing")
    args = parser.parse_args()
    rows: dict[str, list[float]] = {"cold": [], "cached": [], "cold deps": [], "cached deps": []}
    hits = []
    with tempfile.TemporaryDirectory(prefix="conveyor-cache-bench-") as tmp:
        workspace = Path(tmp)
        for run in range(args.runs):
            cache = workspace / f"cache-{run}"
            cold = one_run(workspace, args.service, cache, f"cold-{run}")
            warm = one_run(workspace, args.service, cache, f"cached-{run}")
            cold_deps, warm_deps = cold.job("deps"), warm.job("deps")
            assert cold_deps.cache is not None and warm_deps.cache is not None
            hits.append(warm_deps.cache.hit and not cold_deps.cache.hit)
            rows["cold"].append(cold.duration)
            rows["cached"].append(warm.duration)
            rows["cold deps"].append(cold_deps.duration)
            rows["cached deps"].append(warm_deps.duration)
    median = {name: statistics.median(values) for name, values in rows.items()}
    pipeline_x = median["cold"] / median["cached"]
    deps_x = median["cold deps"] / median["cached deps"]
    print(f"service {args.service}, median of {args.runs} (cache hit on every re-run: {all(hits)})")
    for label, cold_s, warm_s, ratio in (
        ("pipeline", median["cold"], median["cached"], pipeline_x),
        ("deps job", median["cold deps"], median["cached deps"], deps_x),
    ):
        print(f"  {label}  cold {cold_s:.2f} s   cached {warm_s:.2f} s   {ratio:.1f}x")
    verdict = "meets" if pipeline_x >= TARGET else "misses"
    print(f"  target: cached re-run >= {TARGET:g}x faster -> pipeline {verdict} it")
    out = ROOT / "bench" / "results" / "pipeline_cache.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"service": args.service, "runs": rows, "median": median}, indent=2))


if __name__ == "__main__":
    main()
