"""Fifty services sharing one directory, built all at once: wall time, and whether it was right.

Run: .venv/bin/python bench/concurrent_builds.py [--services 50] [--runs 3]

The project is a git repository whose services all live in ``shared/`` (a monorepo root):
a small Python library every build byte-compiles, and a ``dist/`` each build writes its
own file into and archives whole -- the shape of issue 9, where 14 of 50 in-place builds
archived another service's output. Rows, each the median of --runs wall times:

- ``in place``: the reference, what builds did before workspaces -- every command run in
  ``shared/`` itself, all at once, archived from there (the same command runner and
  archiver as today, no workspace, no queue). Its "wrong" count is archives holding
  anything but their own service's file.
- ``workspaces, width N``: ``build_archive`` for every service at once, each in its own
  workspace, the build queue N wide (the core count is the default; 50 means no queue).

Every build of a row runs in its own thread, released together. Raw runs go to
bench/results/concurrent_builds.json (gitignored).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from conveyor.artifacts.archive import create_archive
from conveyor.artifacts.build import build_archive
from conveyor.artifacts.command import command_argv, new_log_path, run_command
from conveyor.layout import Layout

ROOT = Path(__file__).resolve().parents[1]
MODULES = 12


@dataclass(frozen=True)
class Build:
    run: str
    outputs: list[str] = field(default_factory=lambda: ["dist/"])
    timeout: float = 600.0
    inputs: list[str] | None = None


@dataclass(frozen=True)
class Service:
    build: Build
    path: str = "shared"


def service(name: str) -> Service:
    return Service(
        Build(f"python3 -m compileall -q lib && mkdir -p dist && echo {name} > dist/{name}.txt")
    )


def make_project(where: Path) -> Path:
    """A fresh repository: shared/lib with a few modules, dist/ and bytecode ignored."""
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "bench",
        "GIT_AUTHOR_EMAIL": "bench@example.invalid",
        "GIT_COMMITTER_NAME": "bench",
        "GIT_COMMITTER_EMAIL": "bench@example.invalid",
    }
    lib = where / "shared" / "lib"
    lib.mkdir(parents=True)
    for number in range(MODULES):
        body = "\n".join(f"def f{i}(x):\n    return {{x, {i}, 'm{number}'}}\n" for i in range(40))
        (lib / f"m{number}.py").write_text(body)
    (where / ".gitignore").write_text("dist/\n__pycache__/\n")
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "bench"]):
        subprocess.run(["git", "-c", "commit.gpgsign=false", *args], cwd=where, env=env, check=True)
    return where


def own_output_only(archive: Path, name: str) -> bool:
    with tarfile.open(archive) as tar:
        return sorted(m.name for m in tar.getmembers() if m.isfile()) == [f"dist/{name}.txt"]


def in_place(root: Path, name: str, scratch: Path) -> bool:
    """A build as it was before workspaces: the command runs in the service directory."""
    spec = service(name)
    argv, _ = command_argv(spec.build.run, name)
    workdir = root / spec.path
    log = new_log_path(Layout(root).directory(Layout(root).builds), name)
    run_command(argv, workdir, os.environ, spec.build.timeout, log, name, None)
    archive = create_archive(workdir, spec.build.outputs, scratch / f"{name}.tar.gz")
    return own_output_only(archive.path, name)


def in_workspace(root: Path, name: str, width: int, waits: list[str]) -> bool:
    with build_archive(
        Layout(root), name, service(name), max_parallel=width, on_wait=waits.append
    ) as built:
        return own_output_only(built.path, name)


def at_once(count: int, build: Callable[[str], bool]) -> tuple[float, int]:
    """Wall time of ``count`` builds started together, and how many archived the wrong thing."""
    start = threading.Barrier(count + 1)

    def one(index: int) -> bool:
        start.wait()
        return build(f"s{index}")

    with ThreadPoolExecutor(count) as pool:
        futures = [pool.submit(one, i) for i in range(count)]
        start.wait()
        began = time.perf_counter()
        right = [f.result() for f in futures]
        wall = time.perf_counter() - began
    return wall, right.count(False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    widths = sorted({cores, args.services})
    rows: dict[str, list[float]] = {"in place": []} | {f"workspaces, width {w}": [] for w in widths}
    wrong: dict[str, list[int]] = {name: [] for name in rows}
    waited: list[int] = []
    with tempfile.TemporaryDirectory(prefix="conveyor-builds-bench-") as tmp:
        for run in range(args.runs):
            root = make_project(Path(tmp) / f"run-{run}")
            scratch = root / ".conveyor" / "bench"
            scratch.mkdir(parents=True)
            wall, bad = at_once(args.services, lambda n, r=root, s=scratch: in_place(r, n, s))
            rows["in place"].append(wall)
            wrong["in place"].append(bad)
            subprocess.run(["git", "clean", "-fdxq", "-e", ".conveyor"], cwd=root, check=True)
            for width in widths:
                waits: list[str] = []
                label = f"workspaces, width {width}"
                wall, bad = at_once(
                    args.services,
                    lambda n, r=root, w=width, ws=waits: in_workspace(r, n, w, ws),
                )
                rows[label].append(wall)
                wrong[label].append(bad)
                if width == cores:
                    waited.append(len(waits))
    median = {name: statistics.median(values) for name, values in rows.items()}
    reference = median["in place"]
    print(
        f"{args.services} services in one directory, built at once; {cores} cores; "
        f"median of {args.runs} (Python {sys.version.split()[0]})"
    )
    for name, seconds in median.items():
        bad = max(wrong[name])
        print(
            f"  {name:<24} {seconds:6.2f} s  {seconds / reference:5.2f}x in place   "
            f"wrong archives: {bad} of {args.services} (worst run)"
        )
    print(f"  builds that waited for a slot at width {cores}: {waited}")
    out = ROOT / "bench" / "results" / "concurrent_builds.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"services": args.services, "runs": rows, "wrong": wrong}, indent=2))


if __name__ == "__main__":
    main()
