"""Builds at once, for real: threads, shell commands, one shared service directory.

Before workspaces, these builds ran in place: eight services sharing a directory archived
each other's ``dist/`` (issue 9). Every test here would fail on that code.
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import pytest

from conveyor.artifacts.build import BuiltArchive, build_archive
from conveyor.errors import BuildFailed
from conveyor.layout import Layout

from .gitrepo import commit_all, git, init_repo
from .specs import Service, service
from .test_build import members

T = TypeVar("T")
NAMES = [f"s{i}" for i in range(8)]


def at_once(jobs: list[Callable[[], T]]) -> list[T | BaseException]:
    """Run every job in its own thread, started together; results (or errors) in order."""
    start = threading.Barrier(len(jobs))

    def run(job: Callable[[], T]) -> T | BaseException:
        start.wait()
        try:
            return job()
        except Exception as error:
            return error

    with ThreadPoolExecutor(len(jobs)) as pool:
        return list(pool.map(run, jobs))


def shown(result: object) -> str:
    """A job's result for an assertion message: an error with its whole traceback."""
    if isinstance(result, BaseException):
        return "".join(traceback.format_exception(result))
    return repr(result)


def shown_all(results: Sequence[object]) -> str:
    """Every failed job's traceback, numbered as the jobs were."""
    return "\n".join(
        f"job {i}: {shown(r)}" for i, r in enumerate(results) if isinstance(r, BaseException)
    )


def build(
    root: Path,
    name: str,
    spec: Service,
    *,
    width: int = 8,
    on_wait: Callable[[str], None] | None = None,
) -> tuple[BuiltArchive, dict[str, bytes]]:
    with build_archive(Layout(root), name, spec, max_parallel=width, on_wait=on_wait) as built:
        return built, members(built)


@pytest.fixture
def monorepo(tmp_path: Path) -> Path:
    """Eight services in one directory, as a monorepo root often is."""
    root = init_repo(tmp_path / "mono")
    (root / "shared").mkdir()
    (root / "shared" / "common.txt").write_text("common\n")
    (root / ".gitignore").write_text("dist/\n")
    commit_all(root)
    return root


def writes_own_output(name: str) -> Service:
    # Every build writes into the same dist/ and lists it whole: in place, each would
    # archive the outputs of every build that finished before it.
    run = f"mkdir -p dist && sleep 0.2 && echo {name} > dist/{name}.txt && ls dist"
    return service(run, outputs=["dist/"], path="shared")


def untouched(root: Path) -> None:
    assert git(root, "status", "--porcelain", "--ignored") == "!! .conveyor/"
    assert not (root / "shared" / "dist").exists()
    assert list(Layout(root).workspaces.iterdir()) == []


def test_eight_services_sharing_a_directory_each_archive_only_their_own(monorepo: Path) -> None:
    results = at_once([lambda n=n: build(monorepo, n, writes_own_output(n)) for n in NAMES])
    for name, result in zip(NAMES, results, strict=True):
        assert not isinstance(result, BaseException), shown(result)
        built, files = result
        assert files == {f"dist/{name}.txt": f"{name}\n".encode()}
        assert built.service == name and built.facts.service == name
        assert built.log_path.read_text() == f"{name}.txt\n", "its dist/ held only its own"
    assert len({r[0].digest for r in results if not isinstance(r, BaseException)}) == 8
    untouched(monorepo)


def test_the_same_service_built_twice_at_once_gives_one_digest(monorepo: Path) -> None:
    (monorepo / "shared" / "app.py").write_text("def f():\n    return {'a', 'b', 'c'}\n")
    commit_all(monorepo)
    run = "sleep 0.1 && python3 -m compileall -q . && mkdir -p dist && cp -r __pycache__ dist/"
    spec = service(run, path="shared")
    results = at_once([lambda: build(monorepo, "web", spec) for _ in range(2)])
    assert not any(isinstance(r, BaseException) for r in results), shown_all(results)
    first, second = (r for r in results if not isinstance(r, BaseException))
    assert first[0].digest == second[0].digest
    assert any(name.endswith(".pyc") for name in first[1])
    untouched(monorepo)


def test_a_dirty_tree_builds_the_changed_file_and_says_so(monorepo: Path) -> None:
    (monorepo / "shared" / "common.txt").write_text("changed, not committed\n")
    spec = service("mkdir -p dist && cp common.txt dist/", path="shared")
    built, files = build(monorepo, "web", spec)
    assert files == {"dist/common.txt": b"changed, not committed\n"}
    assert built.facts.source.dirty is True
    assert built.facts.workspace is not None and built.facts.workspace.mode == "dirty"
    git(monorepo, "checkout", "--", ".")
    clean, files = build(monorepo, "web", spec)
    assert files == {"dist/common.txt": b"common\n"}
    assert clean.facts.workspace is not None and clean.facts.workspace.mode == "clean"


def test_a_failure_in_one_workspace_leaves_the_others_and_the_project_alone(
    monorepo: Path,
) -> None:
    failing = service(
        "mkdir -p dist && echo half > dist/broken.txt && rm common.txt && sleep 0.1 && exit 7",
        path="shared",
    )
    jobs = [lambda n=n: build(monorepo, n, writes_own_output(n)) for n in NAMES[:3]]
    results = at_once([*jobs, lambda: build(monorepo, "broken", failing)])
    assert isinstance(results[-1], BuildFailed), shown(results[-1])
    assert "exit code 7" in results[-1].message
    for name, result in zip(NAMES[:3], results, strict=False):
        assert not isinstance(result, BaseException), shown(result)
        assert result[1] == {f"dist/{name}.txt": f"{name}\n".encode()}
    assert (monorepo / "shared" / "common.txt").read_text() == "common\n"
    untouched(monorepo)


def test_the_queue_runs_at_most_its_width_and_says_who_waits(
    monorepo: Path, tmp_path: Path
) -> None:
    journal = tmp_path / "journal"
    journal.mkdir()
    waits: list[str] = []

    def spec(name: str) -> Service:
        run = (
            f"date +%s%N > {journal}/{name}.start && sleep 0.25 && "
            f"mkdir -p dist && echo {name} > dist/out && date +%s%N > {journal}/{name}.end"
        )
        return service(run, path="shared")

    names = NAMES[:4]
    results = at_once(
        [lambda n=n: build(monorepo, n, spec(n), width=2, on_wait=waits.append) for n in names]
    )
    assert not any(isinstance(r, BaseException) for r in results), shown_all(results)
    spans = [
        (int((journal / f"{n}.start").read_text()), int((journal / f"{n}.end").read_text()))
        for n in names
    ]
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    assert peak == 2
    assert len(waits) >= 2 and set(waits) == {"waiting for a build slot (2 running)"}
