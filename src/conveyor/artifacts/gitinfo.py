"""Which commit an artifact came from, read from ``git`` itself.

Asking the ``git`` binary (with list arguments, never a shell) rather than parsing ``.git``
keeps worktrees, submodules, packed refs and future formats someone else's problem. Provenance
is best-effort: a directory outside any repository, a missing ``git`` or a repository git
refuses to read all give ``None`` rather than failing the build, because a build is still
worth keeping when its origin is unknown -- the record just says so.

``GitInfo`` travels: the CLI builds, sends ``to_json()`` to the server, and the server reads it
back with ``from_json``, which treats it as the untrusted input it is.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conveyor.artifacts.strict_json import COMMIT_PATTERN, HINT, Fields
from conveyor.errors import UsageError

_TIMEOUT = 10.0
MAX_BRANCH = 1024
MAX_HISTORY = 100
"""Commits of HEAD's history kept with a build (newest first): enough to find, at the next
production release, every commit it is the first to deliver (DORA's lead time) unless more
than this many landed in between, in which case the oldest are left out."""
MAX_TIME = 2**40


@dataclass(frozen=True)
class GitInfo:
    commit: str | None
    branch: str | None  # None when HEAD is detached or unknown
    dirty: bool | None  # uncommitted or untracked changes anywhere in the work tree
    history: tuple[tuple[str, int], ...] = ()
    """(commit, committer time) of HEAD and its ancestors, newest first, at most
    ``MAX_HISTORY``: what DORA's lead time is measured from."""

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"commit": self.commit, "branch": self.branch, "dirty": self.dirty}
        if self.history:
            data["history"] = [[sha, at] for sha, at in self.history]
        return data

    @classmethod
    def from_json(cls, data: object, where: str = "source") -> GitInfo:
        """Read ``to_json()``'s output back, refusing anything it could not have written."""
        fields = Fields(data, where, {"commit", "branch", "dirty", "history"})
        return cls(
            commit=fields.text("commit", max_length=64, pattern=COMMIT_PATTERN, optional=True),
            branch=fields.text("branch", max_length=MAX_BRANCH, optional=True),
            dirty=fields.flag("dirty", optional=True),
            history=_history(fields.raw("history"), fields.path("history")),
        )


def _history(value: object, where: str) -> tuple[tuple[str, int], ...]:
    if value is None:
        return ()
    expected = f"'{where}' must be a list of at most {MAX_HISTORY} [commit, committer time] pairs"
    if not isinstance(value, list) or len(value) > MAX_HISTORY:
        raise UsageError(expected, hint=HINT)
    out: list[tuple[str, int]] = []
    for item in value:
        if (
            not isinstance(item, list)
            or len(item) != 2
            or not isinstance(item[0], str)
            or not COMMIT_PATTERN.fullmatch(item[0])
            or isinstance(item[1], bool)
            or not isinstance(item[1], int)
            or not 0 <= item[1] < MAX_TIME
        ):
            raise UsageError(expected, hint=HINT)
        out.append((item[0], item[1]))
    return tuple(out)


UNKNOWN = GitInfo(commit=None, branch=None, dirty=None)


def git_info(path: Path) -> GitInfo:
    """Commit, branch and dirtiness of the work tree containing ``path``."""
    inside = _git(path, "rev-parse", "--is-inside-work-tree")
    if inside != "true":
        return UNKNOWN
    commit = _git(path, "rev-parse", "--verify", "--quiet", "HEAD^{commit}")
    branch = _git(path, "symbolic-ref", "--quiet", "--short", "HEAD")
    # Conveyor's own state (.conveyor/) is not the user's change.
    status = _git(
        path,
        "status",
        "--porcelain",
        "--untracked-files=normal",
        "--",
        ":(top)",
        ":(top,exclude,glob)**/.conveyor/**",
    )
    return GitInfo(
        commit=commit or None,
        branch=branch or None,
        dirty=None if status is None else bool(status),
        history=commit_history(path) if commit else (),
    )


def commit_history(path: Path) -> tuple[tuple[str, int], ...]:
    """HEAD's newest ``MAX_HISTORY`` commits with their committer times (first parents
    only: a merge delivers its branch's commits, which the merge's own time stands for)."""
    text = _git(path, "log", "--first-parent", f"--max-count={MAX_HISTORY}", "--format=%H %ct")
    out: list[tuple[str, int]] = []
    for line in (text or "").splitlines():
        sha, _, at = line.partition(" ")
        if COMMIT_PATTERN.fullmatch(sha) and at.isdigit():
            out.append((sha, int(at)))
    return tuple(out)


def run_git(
    cwd: Path,
    *args: str,
    stdin: bytes | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = _TIMEOUT,
) -> subprocess.CompletedProcess[bytes] | None:
    """Run git in ``cwd`` on the repository ``cwd`` is in; None if git cannot run at all.

    ``env`` adds to (or overrides) a cleaned copy of this process's environment.
    """
    # Inherited GIT_DIR & co. (set when running inside a git hook) would point git at another
    # repository; optional locks off so `status` never contends with the user's own git; a
    # fixed locale so messages and formats do not depend on the user's.
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    clean["GIT_OPTIONAL_LOCKS"] = "0"
    clean["LC_ALL"] = "C"
    try:
        return subprocess.run(
            ["git", *args],
            cwd=cwd,
            env={**clean, **(env or {})},
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None


def _git(cwd: Path, *args: str) -> str | None:
    """stdout of a git command, stripped; None if it failed or git is unavailable."""
    done = run_git(cwd, *args)
    if done is None or done.returncode != 0:
        return None
    return os.fsdecode(done.stdout).strip()
