"""Same sources, same digest: fresh clones, old clones, alone or at once, with bytecode.

``python -m compileall`` is the hard case the examples use: .pyc files embed the source's
mtime (which a fresh clone resets to now) unless SOURCE_DATE_EPOCH makes them hash-based,
and set constants come out in hash order unless PYTHONHASHSEED is fixed.
"""

from __future__ import annotations

import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conveyor.artifacts.build import ServiceSpec, build_archive
from conveyor.config.loader import load_project
from conveyor.layout import Layout

from .gitrepo import commit_all, git, init_repo
from .specs import service

SHOP = Path(__file__).resolve().parents[2] / "examples" / "shop"
COMPILE = service("python3 -m compileall -q app", outputs=["app/"])


def digest(root: Path, name: str, spec: ServiceSpec) -> str:
    with build_archive(Layout(root), name, spec) as built:
        return built.digest


def clone(origin: Path, dest: Path) -> Path:
    git(dest.parent, "clone", "-q", str(origin), dest.name)
    return dest


def age(root: Path) -> None:
    """Make a checkout look years old and well used: other mtimes, stale build leftovers."""
    for number, path in enumerate(sorted(root.rglob("*"))):
        if ".git" not in path.parts and not path.is_symlink():
            os.utime(path, (1_000_000_000 + number, 1_000_000_000 + number))
    stale = root / "svc" / "app" / "__pycache__"
    stale.mkdir(parents=True, exist_ok=True)
    (stale / "mod.cpython-311.pyc").write_bytes(b"stale bytecode of an older version")
    (stale / "leftover.cpython-311.pyc").write_bytes(b"a module deleted long ago")


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    root = init_repo(tmp_path / "origin")
    app = root / "svc" / "app"
    app.mkdir(parents=True)
    (app / "__init__.py").write_text("")
    (app / "mod.py").write_text(
        "NAMES = {'alpha', 'beta', 'gamma', 'delta'}\n\n"
        "def known(name):\n    return name in {'x', 'y', 'z'}\n"
    )
    (root / ".gitignore").write_text("__pycache__/\n")
    commit_all(root)
    return root


def test_two_clones_build_the_same_bytes(origin: Path, tmp_path: Path) -> None:
    fresh = clone(origin, tmp_path / "fresh")
    old = clone(origin, tmp_path / "old")
    age(old)
    alone = digest(fresh, "svc", COMPILE)
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda _: digest(old, "svc", COMPILE), range(4)))
    assert together == [alone] * 4
    assert not (fresh / "svc" / "app" / "__pycache__").exists()


def test_the_build_is_given_the_commit_time(origin: Path) -> None:
    spec = service('mkdir dist && echo "$SOURCE_DATE_EPOCH" > dist/epoch')
    with build_archive(Layout(origin), "svc", spec) as built:
        assert built.facts.workspace is not None
        epoch = built.facts.workspace.source_date_epoch
    assert epoch == int(git(origin, "log", "-1", "--format=%ct"))
    with build_archive(Layout(origin), "svc", spec) as again:
        assert again.digest == built.digest


def shop_repository(tmp_path: Path) -> Path:
    root = tmp_path / "shop"
    shutil.copytree(SHOP, root, ignore=shutil.ignore_patterns("__pycache__", ".conveyor"))
    init_repo(root)
    (root / ".gitignore").write_text("__pycache__/\n")
    commit_all(root)
    return root


def test_the_shop_example_keeps_its_digests_across_fresh_clones(tmp_path: Path) -> None:
    origin = shop_repository(tmp_path)
    plain = tmp_path / "plain"  # a copy outside git builds the same bytes: nothing is dated
    shutil.copytree(origin, plain, ignore=shutil.ignore_patterns(".git"))
    found = {}
    for checkout in (clone(origin, tmp_path / "a"), clone(origin, tmp_path / "b"), plain):
        config = load_project(checkout / "conveyor.yaml").config
        found[checkout.name] = {
            name: digest(checkout, name, config.service(name)) for name in ("catalog", "pricing")
        }
    assert found["a"] == found["b"] == found["plain"]
    assert found["a"]["catalog"] != found["a"]["pricing"]
