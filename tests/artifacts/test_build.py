"""Building a service for real: a git repository, a shell command, a workspace, an archive."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from conveyor.artifacts.build import BuiltArchive, build_archive
from conveyor.artifacts.gitinfo import git_info
from conveyor.artifacts.provenance import BuildFacts, statement
from conveyor.errors import BuildFailed, ConveyorError
from conveyor.layout import Layout

from .gitrepo import commit_all, init_repo
from .specs import BUILD, Service, service


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = init_repo(tmp_path / "project")
    svc = root / "svc"
    svc.mkdir()
    (svc / "app.py").write_text("print('v1')\n")
    (root / ".gitignore").write_text("dist/\n")
    commit_all(root)
    return root


def members(built: BuiltArchive) -> dict[str, bytes]:
    with tarfile.open(built.path) as tar:
        return {
            m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isfile()
        }


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


def assert_user_facing(error: ConveyorError) -> None:
    assert error.hint
    assert "Traceback" not in error.message


def test_a_build_yields_the_archive_and_the_facts_to_sign(project: Path) -> None:
    lines: list[str] = []
    layout = Layout(project)
    with build_archive(layout, "web", Service(), log=lines.append) as built:
        assert built.service == "web"
        assert built.digest.startswith("sha256:") and len(built.digest) == 71
        assert members(built) == {"dist/app.py": b"print('v1')\n"}
        archive = built.path
        assert archive.is_file()
    assert not archive.exists(), "the archive lives only as long as the block"
    facts = built.facts
    assert (facts.digest, facts.service, facts.command) == (built.digest, "web", BUILD)
    assert facts.outputs == ("dist/",)
    assert facts.source == git_info(project) and facts.source.commit is not None
    assert (facts.source.branch, facts.source.dirty) == ("main", False)
    assert (facts.files, facts.size) == (1, archive_size(built))
    assert facts.started <= facts.finished
    assert facts.workspace is not None and facts.workspace.mode == "clean"
    assert facts.source_uri == f"git+file://{(project / 'svc').resolve()}"
    assert BuildFacts.from_json(facts.to_json()) == facts
    assert statement(facts)["subject"][0]["digest"]["sha256"] == built.digest[7:]
    assert lines == ["built-ok"]
    assert built.log_path.parent == layout.builds
    assert built.log_path.read_text() == "built-ok\n"
    assert built.log_path.name.startswith("web-")
    assert built.duration > 0
    assert not (project / "svc" / "dist").exists(), "builds never write into the project"
    assert list(layout.workspaces.iterdir()) == [], "the workspace is removed"


def archive_size(built: BuiltArchive) -> int:
    return built.facts.size


def test_unchanged_inputs_give_the_same_digest(project: Path) -> None:
    with build_archive(Layout(project), "web", Service()) as first:
        pass
    time.sleep(0.01)  # a later build must not differ just because the clock moved
    with build_archive(Layout(project), "web", Service()) as second:
        pass
    assert second.digest == first.digest
    assert second.log_path != first.log_path


def test_a_relative_project_root_builds_the_same(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with build_archive(Layout(project), "web", Service()) as absolute:
        pass
    monkeypatch.chdir(project / "svc")
    with build_archive(Layout(Path("..")), "web", Service()) as relative:
        assert members(relative) == {"dist/app.py": b"print('v1')\n"}
    assert relative.digest == absolute.digest


def test_the_build_module_loads_neither_the_store_nor_the_signing_key() -> None:
    """The CLI and CI build; only the server stores, signs and records."""
    probe = (
        "import sys, conveyor.artifacts.build as b, conveyor.artifacts as a;"
        "a.build_archive; a.BuiltArchive;"
        "bad = [m for m in sys.modules if m.startswith(('conveyor.store', 'sqlalchemy',"
        " 'conveyor.artifacts.signing', 'conveyor.artifacts.store',"
        " 'cryptography'))];"
        "print(bad)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_argv_commands_run_without_a_shell(project: Path) -> None:
    script = "import pathlib; pathlib.Path('out.txt').write_text('$HOME is literal')"
    spec = service([sys.executable, "-c", script], outputs=["out.txt"])
    with build_archive(Layout(project), "web", spec) as built:
        assert members(built) == {"out.txt": b"$HOME is literal"}
    assert built.facts.command.startswith(sys.executable)


def test_a_failing_build_shows_the_tail_and_leaves_no_trace(project: Path) -> None:
    failing = "for i in $(seq 1 50); do echo line-$i; done; echo boom >&2; exit 3"
    layout = Layout(project)
    with pytest.raises(BuildFailed) as info, build_archive(layout, "web", service(failing)):
        pytest.fail("a failed build yields nothing")
    error = info.value
    assert_user_facing(error)
    assert "exit code 3" in error.message
    assert "boom" in error.message and "line-50" in error.message
    assert "line-10\n" not in error.message, "only the tail belongs in the message"
    assert "services.web.build.run" in (error.hint or "")
    logs = list(layout.builds.glob("*.log"))
    assert len(logs) == 1 and str(logs[0]) in (error.hint or "")
    assert "line-1\n" in logs[0].read_text()
    assert list(layout.workspaces.iterdir()) == []


def test_a_missing_output_names_it(project: Path) -> None:
    with (
        pytest.raises(BuildFailed) as info,
        build_archive(Layout(project), "web", service("echo nothing")),
    ):
        pass
    assert_user_facing(info.value)
    assert "'dist/'" in info.value.message
    assert "check build.outputs in conveyor.yaml" in (info.value.hint or "")


def test_a_timeout_kills_the_whole_process_group(project: Path, tmp_path: Path) -> None:
    pid_file = tmp_path / "bg.pid"
    hang = f"sleep 30 & echo $! > {pid_file}; echo started; sleep 30"
    started = time.monotonic()
    with (
        pytest.raises(BuildFailed) as info,
        build_archive(Layout(project), "web", service(hang, timeout=0.5)),
    ):
        pass
    assert time.monotonic() - started < 20
    assert_user_facing(info.value)
    assert "timed out after 0.5s" in info.value.message
    assert "started" in info.value.message
    assert "build.timeout" in (info.value.hint or "")
    assert wait_gone(int(pid_file.read_text())), "the build's background process survived"


def test_a_background_straggler_does_not_hold_the_build(project: Path, tmp_path: Path) -> None:
    pid_file = tmp_path / "bg.pid"
    run = f"{BUILD}; sleep 30 & echo $! > {pid_file}"
    started = time.monotonic()
    with build_archive(Layout(project), "web", service(run)) as built:
        assert built.facts.files == 1
    assert time.monotonic() - started < 20
    assert wait_gone(int(pid_file.read_text()))


def test_a_program_that_does_not_exist(project: Path) -> None:
    spec = service(["definitely-not-a-program-xyz"])
    with pytest.raises(BuildFailed) as info, build_archive(Layout(project), "web", spec):
        pass
    assert_user_facing(info.value)
    assert "cannot start" in info.value.message
    assert "PATH" in (info.value.hint or "")


@pytest.mark.parametrize("run", ["", "   ", []])
def test_an_empty_command_is_refused(project: Path, run: str | list[str]) -> None:
    with pytest.raises(BuildFailed) as info, build_archive(Layout(project), "web", service(run)):
        pass
    assert "services.web.build.run" in (info.value.hint or "")


def test_a_missing_service_directory(project: Path) -> None:
    with (
        pytest.raises(BuildFailed) as info,
        build_archive(Layout(project), "web", Service(path="nope")),
    ):
        pass
    assert "services.web.path" in (info.value.hint or "")


def test_builds_outside_git_have_unknown_provenance(tmp_path: Path) -> None:
    root = tmp_path / "plain"
    (root / "svc").mkdir(parents=True)
    (root / "svc" / "app.py").write_text("x = 1\n")
    with build_archive(Layout(root), "web", Service()) as built:
        assert members(built) == {"dist/app.py": b"x = 1\n"}
    source = built.facts.source
    assert (source.commit, source.branch, source.dirty) == (None, None, None)
    assert built.facts.workspace is not None and built.facts.workspace.mode == "copy"
