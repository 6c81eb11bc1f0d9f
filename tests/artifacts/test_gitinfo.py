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
    assert git_info(repo / "svc") == GitInfo(commit=sha, branch="trunk", dirty=False)
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
    assert git_info(repo) == GitInfo(commit=sha, branch=None, dirty=False)


def test_inherited_git_dir_does_not_redirect_the_lookup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = init_repo(tmp_path / "repo")
    (repo / "a.txt").write_text("a")
    sha = commit_all(repo)
    other = init_repo(tmp_path / "other")
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))
    assert git_info(repo).commit == sha
