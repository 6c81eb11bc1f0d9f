"""Building a service for real: a git repository, a shell command, the stores on disk."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conveyor.artifacts import ArtifactStore, build_service
from conveyor.errors import BuildFailed, ConveyorError
from conveyor.store import Store

from .gitrepo import commit_all, init_repo

BUILD = "mkdir -p dist && cp app.py dist/ && echo built-ok"


@dataclass(frozen=True)
class Build:
    run: str | list[str] = BUILD
    outputs: list[str] = field(default_factory=lambda: ["dist/"])
    timeout: float = 60.0


@dataclass(frozen=True)
class Service:
    path: str = "svc"
    build: Build = field(default_factory=Build)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = init_repo(tmp_path / "project")
    svc = root / "svc"
    svc.mkdir()
    (svc / "app.py").write_text("print('v1')\n")
    (root / ".gitignore").write_text("dist/\n.conveyor/\n")
    commit_all(root)
    return root


@pytest.fixture
def store(project: Path) -> Iterator[Store]:
    (project / ".conveyor").mkdir()
    with Store.open(f"sqlite:///{project / '.conveyor' / 'state.db'}") as opened:
        yield opened


@pytest.fixture
def artifacts(project: Path) -> ArtifactStore:
    return ArtifactStore(project)


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in {"Z", "X"}


def wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if gone(pid):
            return True
        time.sleep(0.05)
    return False


def test_build_records_provenance_and_stores_the_bytes(
    project: Path, store: Store, artifacts: ArtifactStore
) -> None:
    from conveyor.artifacts.gitinfo import git_info

    lines: list[str] = []
    result = build_service(
        project, "web", Service(), store, artifacts, actor="alice", log=lines.append
    )
    a = result.artifact
    assert a.service == "web"
    assert a.commit == git_info(project).commit and a.commit is not None
    assert (a.branch, a.dirty) == ("main", False)
    assert a.build_command == BUILD
    assert a.outputs == ("dist/",)
    assert a.files == 1
    assert a.size == artifacts.path(a.digest).stat().st_size
    assert a.metadata["build_duration"] >= 0
    assert a.metadata["builder"]["python"]
    assert result.reused is False
    assert result.duration > 0
    artifacts.verify(a.digest)
    assert (artifacts.unpack(a.digest) / "dist" / "app.py").read_text() == "print('v1')\n"
    assert store.get_artifact(a.digest) == a
    assert [e.kind for e in store.events()] == ["artifact.built"]
    assert lines == ["built-ok"]
    assert result.log_path.parent == project / ".conveyor" / "builds"
    assert result.log_path.read_text() == "built-ok\n"
    assert result.log_path.name.startswith("web-")


def test_unchanged_inputs_reuse_the_same_artifact(
    project: Path, store: Store, artifacts: ArtifactStore
) -> None:
    first = build_service(project, "web", Service(), store, artifacts, actor="alice")
    stored = artifacts.path(first.artifact.digest).stat()
    time.sleep(0.01)  # a later build must not differ just because the clock moved
    second = build_service(project, "web", Service(), store, artifacts, actor="bob")
    assert second.artifact == first.artifact
    assert second.reused is True
    again = artifacts.path(first.artifact.digest).stat()
    assert (again.st_ino, again.st_mtime_ns) == (stored.st_ino, stored.st_mtime_ns)
    assert len(store.list_artifacts()) == 1
    assert [e.kind for e in store.events()] == ["artifact.built"]
    assert second.log_path != first.log_path


def test_a_dirty_tree_is_recorded_and_changes_the_digest(
    project: Path, store: Store, artifacts: ArtifactStore
) -> None:
    clean = build_service(project, "web", Service(), store, artifacts, actor="alice").artifact
    (project / "svc" / "app.py").write_text("print('v2')\n")
    dirty = build_service(project, "web", Service(), store, artifacts, actor="alice").artifact
    assert dirty.dirty is True and clean.dirty is False
    assert dirty.digest != clean.digest
    assert dirty.commit == clean.commit


def test_argv_commands_run_without_a_shell(
    project: Path, store: Store, artifacts: ArtifactStore
) -> None:
    script = "import pathlib; pathlib.Path('out.txt').write_text('$HOME is literal')"
    service = Service(build=Build(run=[sys.executable, "-c", script], outputs=["out.txt"]))
    result = build_service(project, "web", service, store, artifacts, actor="alice")
    out = artifacts.unpack(result.artifact.digest) / "out.txt"
    assert out.read_text() == "$HOME is literal"
    assert result.artifact.build_command.startswith(sys.executable)


def assert_user_facing(error: ConveyorError) -> None:
    assert error.hint
    assert "Traceback" not in error.message


def test_a_failing_build_shows_the_tail_and_records_nothing(
    project: Path, store: Store, artifacts: ArtifactStore
) -> None:
    failing = "for i in $(seq 1 50); do echo line-$i; done; echo boom >&2; exit 3"
    with pytest.raises(BuildFailed) as info:
        build_service(
            project, "web", Service(build=Build(run=failing)), store, artifacts, actor="a"
        )
    error = info.value
    assert_user_facing(error)
    assert "exit code 3" in error.message
    assert "boom" in error.message and "line-50" in error.message
    assert "line-10\n" not in error.message, "only the tail belongs in the message"
    assert "services.web.build.run" in (error.hint or "")
    logs = list((project / ".conveyor" / "builds").iterdir())
    assert len(logs) == 1 and str(logs[0]) in (error.hint or "")
    assert "line-1\n" in logs[0].read_text()
    assert store.list_artifacts() == [] and store.events() == []


def test_a_missing_output_names_it(project: Path, store: Store, artifacts: ArtifactStore) -> None:
    service = Service(build=Build(run="echo nothing", outputs=["dist/"]))
    with pytest.raises(BuildFailed) as info:
        build_service(project, "web", service, store, artifacts, actor="a")
    assert_user_facing(info.value)
    assert "'dist/'" in info.value.message
    assert "check build.outputs in conveyor.yaml" in (info.value.hint or "")
    assert store.list_artifacts() == []


def test_a_timeout_kills_the_whole_process_group(
    project: Path, store: Store, artifacts: ArtifactStore
) -> None:
    hang = "sleep 30 & echo $! > bg.pid; echo started; sleep 30"
    service = Service(build=Build(run=hang, timeout=0.5))
    started = time.monotonic()
    with pytest.raises(BuildFailed) as info:
        build_service(project, "web", service, store, artifacts, actor="a")
    assert time.monotonic() - started < 20
    assert_user_facing(info.value)
    assert "timed out after 0.5s" in info.value.message
    assert "started" in info.value.message
    assert "build.timeout" in (info.value.hint or "")
    background = int((project / "svc" / "bg.pid").read_text())
    assert wait_gone(background), "the build's background process survived the timeout"


def test_a_background_straggler_does_not_hold_the_build(
    project: Path, store: Store, artifacts: ArtifactStore
) -> None:
    run = f"{BUILD}; sleep 30 & echo $! > bg.pid"
    started = time.monotonic()
    result = build_service(
        project, "web", Service(build=Build(run=run)), store, artifacts, actor="a"
    )
    assert time.monotonic() - started < 20
    assert result.artifact.files == 1
    assert wait_gone(int((project / "svc" / "bg.pid").read_text()))


def test_a_program_that_does_not_exist(
    project: Path, store: Store, artifacts: ArtifactStore
) -> None:
    service = Service(build=Build(run=["definitely-not-a-program-xyz"]))
    with pytest.raises(BuildFailed) as info:
        build_service(project, "web", service, store, artifacts, actor="a")
    assert_user_facing(info.value)
    assert "cannot start" in info.value.message
    assert "PATH" in (info.value.hint or "")


@pytest.mark.parametrize("run", ["", "   ", []])
def test_an_empty_command_is_refused(
    project: Path, store: Store, artifacts: ArtifactStore, run: str | list[str]
) -> None:
    with pytest.raises(BuildFailed) as info:
        build_service(project, "web", Service(build=Build(run=run)), store, artifacts, actor="a")
    assert "services.web.build.run" in (info.value.hint or "")


def test_a_missing_service_directory(project: Path, store: Store, artifacts: ArtifactStore) -> None:
    with pytest.raises(BuildFailed) as info:
        build_service(project, "web", Service(path="nope"), store, artifacts, actor="a")
    assert "services.web.path" in (info.value.hint or "")


def test_builds_outside_git_have_unknown_provenance(tmp_path: Path) -> None:
    root = tmp_path / "plain"
    (root / "svc").mkdir(parents=True)
    (root / "svc" / "app.py").write_text("x = 1\n")
    with Store.open(f"sqlite:///{tmp_path / 'state.db'}") as store:
        result = build_service(root, "web", Service(), store, ArtifactStore(root), actor="a")
    a = result.artifact
    assert (a.commit, a.branch, a.dirty) == (None, None, None)
    assert os.path.isfile(ArtifactStore(root).path(a.digest))
