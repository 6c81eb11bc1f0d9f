"""The job cache through real runs: miss then save, exact hit, newest prefix restore."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from conveyor.pipeline import PipelineSpec, RunResult, run_pipeline
from conveyor.pipeline.cache import CacheStore, hash_files

pytestmark = pytest.mark.integration

INSTALL = (
    'if [ -f .deps/lib ]; then echo "restored $(cat .deps/lib)"; '
    "else mkdir -p .deps && cp requirements.txt .deps/lib && echo installed; fi; {tail}"
)


def run(workdir: Path, cache_dir: Path, tail: str = "true") -> RunResult:
    spec = PipelineSpec.model_validate(
        {
            "vars": {"python": "3.11"},
            "jobs": {
                "deps": {
                    "run": INSTALL.format(tail=tail),
                    "cache": {
                        "key": "deps-{{ vars.python }}-{{ hashFiles('requirements*.txt') }}",
                        "paths": [".deps/"],
                        "restore_keys": ["deps-{{ vars.python }}-", "deps-"],
                    },
                }
            },
        }
    )
    return run_pipeline(spec, workdir, cache_dir=cache_dir)


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    workdir, cache_dir = tmp_path / "work", tmp_path / "cache"
    workdir.mkdir()
    (workdir / "requirements.txt").write_text("httpx==1\n")
    return workdir, cache_dir


def test_miss_then_exact_hit_then_prefix_restore(dirs: tuple[Path, Path]) -> None:
    workdir, cache_dir = dirs
    digest = hash_files(workdir, ["requirements*.txt"])

    cold = run(workdir, cache_dir).job("deps")
    assert cold.log == "installed"
    assert cold.cache is not None
    assert (cold.cache.key, cold.cache.hit, cold.cache.restored_key, cold.cache.saved) == (
        f"deps-3.11-{digest}",
        False,
        None,
        True,
    )

    shutil.rmtree(workdir / ".deps")
    warm = run(workdir, cache_dir).job("deps")
    assert warm.log == "restored httpx==1"
    assert warm.cache is not None
    assert (warm.cache.hit, warm.cache.restored_key, warm.cache.saved) == (
        True,
        f"deps-3.11-{digest}",
        False,
    )

    shutil.rmtree(workdir / ".deps")
    (workdir / "requirements.txt").write_text("httpx==2\n")
    partial = run(workdir, cache_dir).job("deps")
    assert partial.log == "restored httpx==1"  # the old entry, found by its prefix
    assert partial.cache is not None
    assert partial.cache.hit is False
    assert partial.cache.restored_key == f"deps-3.11-{digest}"
    assert partial.cache.saved is True
    assert partial.cache.key != partial.cache.restored_key


def test_a_failed_job_saves_nothing(dirs: tuple[Path, Path]) -> None:
    workdir, cache_dir = dirs
    failed = run(workdir, cache_dir, tail="exit 1").job("deps")
    assert failed.result == "failure"
    assert failed.cache is not None and failed.cache.saved is False
    shutil.rmtree(workdir / ".deps")
    again = run(workdir, cache_dir).job("deps")
    assert again.log == "installed"


def test_prefix_restore_takes_the_newest_entry(tmp_path: Path) -> None:
    store = CacheStore(tmp_path / "cache")
    for version in ("old", "new"):
        work = tmp_path / version
        (work / "d").mkdir(parents=True)
        (work / "d" / "v").write_text(version)
        assert store.save(f"k-{version}", ["d"], work)
        time.sleep(0.01)
    assert not store.save("k-new", ["d"], tmp_path / "new")  # entries are immutable
    target = tmp_path / "target"
    target.mkdir()
    outcome = store.restore("k-missing", ["nope-", "k-"], target)
    assert (outcome.hit, outcome.restored_key) == (False, "k-new")
    assert (target / "d" / "v").read_text() == "new"
    assert store.restore("other", ["x-"], target).restored_key is None


def test_hash_files_changes_with_content_and_is_empty_without_matches(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("1")
    first = hash_files(tmp_path, ["*.txt"])
    (tmp_path / "a.txt").write_text("2")
    assert hash_files(tmp_path, ["*.txt"]) not in ("", first)
    assert hash_files(tmp_path, ["*.lock"]) == ""


def test_a_corrupt_entry_is_a_miss_not_a_failure(dirs: tuple[Path, Path]) -> None:
    workdir, cache_dir = dirs
    run(workdir, cache_dir)
    for entry in cache_dir.glob("*.tar.gz"):
        entry.write_bytes(b"not a tarball")
    shutil.rmtree(workdir / ".deps")
    job = run(workdir, cache_dir).job("deps")
    assert job.result == "success"
    assert "conveyor: cache restore failed, continuing cold" in job.log
    assert "installed" in job.log


def test_a_bad_hashfiles_pattern_fails_the_job(tmp_path: Path) -> None:
    spec = PipelineSpec.model_validate(
        {
            "jobs": {
                "a": {
                    "run": "true",
                    "cache": {"key": "k-{{ hashFiles('/etc/*') }}", "paths": ["x"]},
                }
            }
        }
    )
    job = run_pipeline(spec, tmp_path, cache_dir=tmp_path / "c").job("a")
    assert job.result == "failure" and "hashFiles()" in (job.reason or "")
