"""Which commit an artifact came from, read from ``git`` itself.

Asking the ``git`` binary (with list arguments, never a shell) rather than parsing ``.git``
keeps worktrees, submodules, packed refs and future formats someone else's problem. Provenance
is best-effort: a directory outside any repository, a missing ``git`` or a repository git
refuses to read all give ``None`` rather than failing the build, because a build is still
worth keeping when its origin is unknown -- the record just says so.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

_TIMEOUT = 10.0


@dataclass(frozen=True)
class GitInfo:
    commit: str | None
    branch: str | None  # None when HEAD is detached or unknown
    dirty: bool | None  # uncommitted or untracked changes anywhere in the work tree


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
    )


def _git(cwd: Path, *args: str) -> str | None:
    """stdout of a git command, stripped; None if it failed or git is unavailable."""
    # Inherited GIT_DIR & co. (set when running inside a git hook) would point git at another
    # repository; optional locks off so `status` never contends with the user's own git.
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env["GIT_OPTIONAL_LOCKS"] = "0"
    env["LC_ALL"] = "C"
    try:
        done = subprocess.run(
            ["git", *args],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip()
