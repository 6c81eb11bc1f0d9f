"""Provenance from a real git repository."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.artifacts.gitinfo import GitInfo, git_info

from .gitrepo import commit_all, git, init_repo


def test_outside_a_repository_everything_is_unknown(tmp_path: Path) -> None:
    assert git_info(tmp_path) == GitInfo(None, None, None)


def test_missing_directory_is_unknown(tmp_path: Path) -> None:
    assert git_info(tmp_path / "nope") == GitInfo(None, None, None)


def test_git_not_installed_is_unknown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    init_repo(tmp_path / "repo")
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    assert git_info(tmp_path / "repo") == GitInfo(None, None, None)


def test_a_repository_without_commits(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "repo")
    (repo / "a.txt").write_text("a")
    assert git_info(repo) == GitInfo(commit=None, branch="main", dirty=True)


def test_clean_then_modified_then_untracked(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "repo", branch="trunk")
    (repo / "svc").mkdir()
    (repo / "svc" / "a.txt").write_text("a")
    sha = commit_all(repo)
    found = git_info(repo / "svc")
    assert found == GitInfo(commit=sha, branch="trunk", dirty=False, history=found.history)
    assert [c for c, _ in found.history] == [sha]
    (repo / "svc" / "a.txt").write_text("b")
    assert git_info(repo / "svc").dirty is True
    git(repo, "checkout", "--", ".")
    (repo / "new.txt").write_text("new")
    assert git_info(repo / "svc").dirty is True


def test_detached_head_has_no_branch(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "repo")
    (repo / "a.txt").write_text("a")
    sha = commit_all(repo)
    git(repo, "checkout", "-q", "--detach")
    found = git_info(repo)
    assert found == GitInfo(commit=sha, branch=None, dirty=False, history=found.history)


def test_inherited_git_dir_does_not_redirect_the_lookup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = init_repo(tmp_path / "repo")
    (repo / "a.txt").write_text("a")
    sha = commit_all(repo)
    other = init_repo(tmp_path / "other")
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))
    assert git_info(repo).commit == sha


def test_history_is_recorded_newest_first_with_committer_times(tmp_path: Path) -> None:
    """What DORA's lead time is measured from: each commit of HEAD with its committer time."""
    repo = init_repo(tmp_path / "repo")
    shas = []
    for n, when in enumerate((1_700_000_000, 1_700_000_500, 1_700_003_000)):
        (repo / "a.txt").write_text(str(n))
        stamp = f"{when} +0000"
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("GIT_COMMITTER_DATE", stamp)
            mp.setenv("GIT_AUTHOR_DATE", stamp)
            shas.append(commit_all(repo, f"c{n}"))
    info = git_info(repo)
    assert info.history == (
        (shas[2], 1_700_003_000),
        (shas[1], 1_700_000_500),
        (shas[0], 1_700_000_000),
    )
    assert GitInfo.from_json(info.to_json()) == info


@pytest.mark.parametrize(
    "history",
    [
        "not a list",
        [["zz", 1]],
        [["a" * 40, -1]],
        [["a" * 40, True]],
        [["a" * 40, 1, 2]],
        [["a" * 40, 1]] * 101,
    ],
)
def test_a_malformed_history_is_refused(history: object) -> None:
    from conveyor.errors import UsageError

    with pytest.raises(UsageError, match=r"source\.history"):
        GitInfo.from_json({"commit": None, "branch": None, "dirty": None, "history": history})
