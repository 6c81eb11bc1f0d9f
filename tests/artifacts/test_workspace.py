"""Workspaces for real: git repositories in every state, files on disk, processes that die."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from conveyor.artifacts.gitinfo import git_info
from conveyor.artifacts.workspace import (
    FALLBACK_EPOCH,
    Workspace,
    populate,
    private_home,
    remove_tree,
    sweep,
)
from conveyor.errors import BuildFailed

from .gitrepo import commit_all, git, init_repo


def files(root: Path) -> dict[str, str]:
    """Every file under ``root`` with its text (symlinks as '-> target')."""
    found = {}
    for path in sorted(root.rglob("*")):
        name = path.relative_to(root).as_posix()
        if path.is_symlink():
            found[name] = f"-> {os.readlink(path)}"
        elif path.is_file():
            found[name] = path.read_text()
    return found


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    with private_home(tmp_path / "workspaces", "svc") as made:
        yield made


def make(
    home: Path, project: Path, service_path: str = "svc", inputs: Sequence[str] | None = None
) -> Workspace:
    return populate(
        home,
        project,
        git_info(project),
        service_name="web",
        service_path=service_path,
        inputs=inputs,
    )


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("GIT_COMMITTER_DATE", "2024-02-03T04:05:06Z")
    root = init_repo(tmp_path / "repo")
    (root / "svc").mkdir()
    (root / "svc" / "app.py").write_text("v1\n")
    (root / "svc" / "run.sh").write_text("#!/bin/sh\n")
    (root / "svc" / "run.sh").chmod(0o755)
    (root / "svc" / "link").symlink_to("app.py")
    (root / "lib.txt").write_text("shared\n")
    (root / ".gitignore").write_text("*.log\nnode_modules/\n")
    commit_all(root)
    (root / "svc" / "debug.log").write_text("ignored\n")
    (root / "svc" / "node_modules").mkdir()
    (root / "svc" / "node_modules" / "dep.js").write_text("ignored\n")
    return root


COMMITTED = {
    ".gitignore": "*.log\nnode_modules/\n",
    "lib.txt": "shared\n",
    "svc/app.py": "v1\n",
    "svc/link": "-> app.py",
    "svc/run.sh": "#!/bin/sh\n",
}


def test_a_clean_tree_is_an_export_of_the_commit(home: Path, repo: Path) -> None:
    ws = make(home, repo)
    assert files(ws.root) == COMMITTED, "ignored files stay out"
    assert ws.facts.mode == "clean"
    assert ws.facts.files == 5
    assert ws.facts.inputs is None
    commit_time = int(git(repo, "log", "-1", "--format=%ct"))
    assert ws.facts.source_date_epoch == commit_time == 1706933106
    assert git(repo, "status", "--porcelain") == "", "the user's index and tree are untouched"


def test_every_file_is_dated_the_commit_and_modes_ignore_the_umask(home: Path, repo: Path) -> None:
    ws = make(home, repo)
    epoch = ws.facts.source_date_epoch
    for path in [ws.tree, *ws.tree.rglob("*")]:
        assert path.lstat().st_mtime == epoch, path
    assert stat.S_IMODE((ws.root / "svc" / "run.sh").stat().st_mode) == 0o755
    assert stat.S_IMODE((ws.root / "svc" / "app.py").stat().st_mode) == 0o644
    assert (ws.root / "svc" / "link").is_symlink()


def test_a_dirty_tree_is_what_git_lists_as_it_is_on_disk(home: Path, repo: Path) -> None:
    (repo / "svc" / "app.py").write_text("v2, not committed\n")
    (repo / "svc" / "new.py").write_text("untracked\n")
    (repo / "lib.txt").unlink()
    ws = make(home, repo)
    assert ws.facts.mode == "dirty"
    expected = {**COMMITTED, "svc/app.py": "v2, not committed\n", "svc/new.py": "untracked\n"}
    del expected["lib.txt"]
    assert files(ws.root) == expected
    assert ws.facts.files == len(expected)
    assert stat.S_IMODE((ws.root / "svc" / "run.sh").stat().st_mode) == 0o755
    assert ws.facts.source_date_epoch == 1706933106, "a dirty tree is dated by its commit too"


def test_a_project_below_the_repository_root_copies_only_itself(home: Path, repo: Path) -> None:
    (repo / "lib.txt").write_text("dirty, but outside the project\n")
    ws = make(home, repo / "svc", service_path=".")
    assert git_info(repo / "svc").dirty is True
    assert ws.facts.mode == "clean", "only the project's own part decides"
    assert ws.root == ws.tree / "svc"
    assert files(ws.tree) == {k: v for k, v in COMMITTED.items() if k.startswith("svc/")}


def test_a_repository_without_commits(home: Path, tmp_path: Path) -> None:
    root = init_repo(tmp_path / "fresh")
    (root / "svc").mkdir()
    (root / "svc" / "app.py").write_text("new\n")
    ws = make(home, root)
    assert ws.facts.mode == "dirty"
    assert ws.facts.source_date_epoch == FALLBACK_EPOCH
    assert files(ws.root) == {"svc/app.py": "new\n"}


def test_outside_git_a_plain_copy_without_state_directories(home: Path, tmp_path: Path) -> None:
    root = tmp_path / "plain"
    (root / "svc" / "node_modules").mkdir(parents=True)
    (root / "svc" / "node_modules" / "dep.js").write_text("kept: nothing says it is ignored\n")
    (root / "svc" / "app.py").write_text("x\n")
    (root / ".conveyor" / "builds").mkdir(parents=True)
    (root / ".conveyor" / "builds" / "old.log").write_text("state\n")
    (root / "svc" / ".git").mkdir()
    (root / "svc" / ".git" / "HEAD").write_text("not a repository of ours\n")
    ws = make(home, root)
    assert ws.facts.mode == "copy"
    assert ws.facts.source_date_epoch == FALLBACK_EPOCH == 315532800
    assert files(ws.root) == {
        "svc/app.py": "x\n",
        "svc/node_modules/dep.js": "kept: nothing says it is ignored\n",
    }


@pytest.mark.parametrize(
    ("inputs", "expected"),
    [
        (["app.py"], ["svc/app.py"]),
        (["*.sh", "link"], ["svc/link", "svc/run.sh"]),
        (["."], ["svc/app.py", "svc/link", "svc/run.sh"]),
    ],
)
def test_inputs_narrow_the_copy_to_the_service_path(
    home: Path, repo: Path, inputs: list[str], expected: list[str]
) -> None:
    ws = make(home, repo, inputs=inputs)
    assert sorted(files(ws.root)) == expected
    assert ws.facts.inputs == tuple(inputs)
    assert ws.facts.files == len(expected)


def test_inputs_apply_to_a_dirty_tree_too(home: Path, repo: Path) -> None:
    (repo / "svc" / "src").mkdir()
    (repo / "svc" / "src" / "a.py").write_text("untracked\n")
    ws = make(home, repo, inputs=["src/**/*.py"])
    assert ws.facts.mode == "dirty"
    assert files(ws.root) == {"svc/src/a.py": "untracked\n"}


def test_an_input_that_matches_nothing_is_named(home: Path, repo: Path) -> None:
    with pytest.raises(BuildFailed) as info:
        make(home, repo, inputs=["app.py", "srcc/**", "debug.log"])
    assert "'srcc/**'" in info.value.message and "'debug.log'" in info.value.message
    assert "'app.py'" not in info.value.message
    assert "services.web.build.inputs" in (info.value.hint or "")
    assert "ignored" in (info.value.hint or "")


def test_the_environment_is_reproducible_and_blind_to_the_repository(
    home: Path, repo: Path
) -> None:
    ws = make(home, repo)
    env = ws.environment({"PATH": os.environ["PATH"], "GIT_DIR": str(repo / ".git"), "KEEP": "1"})
    assert env["SOURCE_DATE_EPOCH"] == str(ws.facts.source_date_epoch)
    assert env["PYTHONHASHSEED"] == "0"
    assert env["KEEP"] == "1" and "GIT_DIR" not in env
    found = subprocess.run(
        ["git", "rev-parse", "--show-toplevel"],
        cwd=ws.root / "svc",
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert found.returncode != 0, f"the build found the project's repository: {found.stdout}"


def test_remove_tree_copes_with_read_only_directories(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "cache" / "mod").mkdir(parents=True)
    (tree / "cache" / "mod" / "f").write_text("x")
    (tree / "cache" / "mod").chmod(0o500)
    (tree / "cache").chmod(0o500)
    assert remove_tree(tree)
    assert not tree.exists()


def test_the_workspace_of_a_dead_build_is_swept(tmp_path: Path) -> None:
    parent = tmp_path / "workspaces"
    holder = (
        "import sys, time; from pathlib import Path;"
        "from conveyor.artifacts.workspace import private_home\n"
        "with private_home(Path(sys.argv[1]), sys.argv[2]) as home:\n"
        "    (home / 'tree').mkdir(); print(home, flush=True); time.sleep(60)\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", holder, str(parent), name],
            stdout=subprocess.PIPE,
            text=True,
        )
        for name in ("dead", "alive")
    ]
    try:
        homes = [Path(p.stdout.readline().strip()) for p in procs if p.stdout is not None]
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait()
        assert homes[0].is_dir(), "SIGKILL leaves the workspace behind"
        assert sweep(parent) == 1
        assert not homes[0].exists() and homes[1].is_dir(), "only the dead build's goes"
        assert sorted(p.name for p in parent.iterdir()) == sorted(
            [homes[1].name, f"{homes[1].name}.lock"]
        )
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
    deadline = time.monotonic() + 5
    while sweep(parent) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(parent.iterdir()) == []
