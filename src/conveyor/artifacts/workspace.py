"""A private copy of the project for each build, made from what git says the sources are.

Builds used to run in the service directory itself, so two builds at once (of two services
sharing a directory, or of one service twice) read and archived each other's outputs. Now
every build gets a directory of its own under ``.conveyor/workspaces/`` holding a copy of
the project root, runs there, and the copy is deleted afterwards; the project tree is only
ever read. How the copy is made depends on what git can vouch for:

``clean`` -- the project's part of the work tree matches the commit: the files are exported
    from the commit itself (``git read-tree`` into a throw-away index, then ``git
    checkout-index``, so the user's index is never touched and git's own checkout filters
    and line endings apply). Reading the object database rather than the disk means an
    editor saving a file mid-copy cannot leak into a build whose provenance names the commit.
``dirty`` -- uncommitted changes: what ``git ls-files --cached --others --exclude-standard``
    lists (tracked files plus untracked files that are not ignored), copied from disk as they
    are. A deleted tracked file stays deleted.
``copy`` -- not a git work tree (or no ``git``): every file but ``.git`` and ``.conveyor``.

Ignored files (``node_modules/``, ``.venv/``, the leftovers of earlier in-place builds) are
not in a git workspace: a build must produce what it needs, which is what makes a fresh
clone and an old checkout build the same bytes. ``build.inputs`` narrows the copy further to
the files under the service path that match its globs (``globs``).

Reproducible times: every file and directory is dated ``SOURCE_DATE_EPOCH``, which the build
is also given -- the commit's time for a git tree (dirty too: the same commit plus the same
edits gives the same bytes), 1980-01-01 (the earliest time a zip file can hold) outside git.
``PYTHONHASHSEED=0`` is set too, because set constants in .pyc files come out in hash order.
The workspace is not a git repository, and ``GIT_CEILING_DIRECTORIES`` stops git from
finding the project's repository above it.

A workspace whose build died without cleaning up (SIGKILL, power loss) is swept by the next
build: each is paired with a lock file its owner holds while it lives.

With ``run_as`` the copy is handed to that user (``hand_to``): the tree and a HOME of its
own become theirs, the workspace's directory stays root's but searchable (0711, as are
``.conveyor/`` and ``workspaces/``: ``layout.open_passage``), so the user reaches its tree by
name and nothing else. Pipeline jobs with ``run_as`` get such a copy too, one per run
(``job_workspace``): they share it as they would share the project directory, and what they
write stays there.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
import stat
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from conveyor.artifacts.archive import SKIPPED_NAMES
from conveyor.artifacts.gitinfo import GitInfo, git_info, run_git
from conveyor.artifacts.globs import INPUTS_HINT, Globs
from conveyor.artifacts.provenance import WorkspaceFacts, WorkspaceMode
from conveyor.errors import BuildFailed
from conveyor.layout import open_passage
from conveyor.run_as import Switch, User, hand_over

FALLBACK_EPOCH = 315_532_800
"""1980-01-01T00:00:00Z: the source date outside git (zip, and so wheels, cannot go earlier)."""
_GIT_TIMEOUT = 600.0
# Variables that tell git which repository to use; a build inheriting them (from a git hook)
# would reach into the project's repository from its workspace.
_REPOSITORY_VARIABLES = frozenset(
    {
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_INDEX_FILE",
        "GIT_COMMON_DIR",
        "GIT_OBJECT_DIRECTORY",
        "GIT_ALTERNATE_OBJECT_DIRECTORIES",
        "GIT_NAMESPACE",
        "GIT_PREFIX",
    }
)


@dataclass(frozen=True)
class Workspace:
    """A populated workspace: ``root`` is the copy of the project root."""

    home: Path  # private to this build: the tree, git's scratch index, the archive
    tree: Path  # everything copied; removed as soon as the outputs are archived
    root: Path
    facts: WorkspaceFacts

    def environment(self, base: Mapping[str, str]) -> dict[str, str]:
        """The build command's environment: ``base`` made reproducible and repository-blind."""
        env = {k: v for k, v in base.items() if k not in _REPOSITORY_VARIABLES}
        env["SOURCE_DATE_EPOCH"] = str(self.facts.source_date_epoch)
        env["PYTHONHASHSEED"] = "0"
        env["GIT_CEILING_DIRECTORIES"] = str(self.home.resolve())
        return env


@contextlib.contextmanager
def private_home(parent: Path, label: str) -> Iterator[Path]:
    """A new directory under ``parent``, owned by this build while it runs, then removed.

    Sweeps the directories of dead builds first.
    """
    parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    sweep(parent)
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in label)[:64]
    name = f"{safe}-{secrets.token_hex(6)}"
    lock = parent / f"{name}.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        # Blocking: a sweeper may hold the brand-new lock for a moment; it leaves an empty
        # lock file alone, and ours is empty until the pid is written under the lock.
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, f"{os.getpid()}\n".encode())
        home = parent / name
        home.mkdir(mode=0o700)
        try:
            yield home
        finally:
            # A tree that will not go keeps its lock file, so the next sweep tries again.
            if remove_tree(home):
                lock.unlink(missing_ok=True)
    finally:
        os.close(fd)


def hand_to(workspace: Workspace, user: User) -> Switch:
    """Give ``user`` the workspace's tree and a HOME beside it; the way to both searchable.

    Returns how to start processes as ``user`` there. The workspace's own directory (which
    also holds git's scratch index and the archive) stays this process's.
    """
    home = workspace.home / "home"
    home.mkdir(mode=0o700, exist_ok=True)
    hand_over(workspace.tree, user)
    hand_over(home, user)
    open_passage(workspace.tree)
    return Switch(user, str(home))


@dataclass(frozen=True)
class JobDirectory:
    """Where a pipeline run's jobs work, and as whom (None: the project itself, as we are)."""

    path: Path
    run_as: Switch | None = None


@contextlib.contextmanager
def job_workspace(parent: Path, project_root: Path, user: User | None) -> Iterator[JobDirectory]:
    """The directory a pipeline run's ``run:`` jobs work in.

    Without a user to switch to, the project itself, as always. With one, a copy of the
    project (made as a build's is: what git says the sources are) owned by that user, for
    the whole run, removed afterwards.
    """
    if user is None:
        yield JobDirectory(project_root)
        return
    with private_home(parent, "pipeline") as home:
        source = git_info(project_root)
        workspace = populate(
            home, project_root, source, service_name="pipeline", service_path=".", inputs=None
        )
        try:
            yield JobDirectory(workspace.root, hand_to(workspace, user))
        finally:
            remove_tree(workspace.tree)


def sweep(parent: Path) -> int:
    """Remove workspaces whose owner is gone (its lock is free); return how many."""
    removed = 0
    for lock in sorted(parent.glob("*.lock")):
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # alive
            if os.fstat(fd).st_size == 0:
                continue  # its owner is between creating and locking it
            if remove_tree(parent / lock.name.removesuffix(".lock")):
                lock.unlink(missing_ok=True)
                removed += 1
        finally:
            os.close(fd)
    return removed


def populate(
    home: Path,
    project_root: Path,
    source: GitInfo,
    *,
    service_name: str,
    service_path: str,
    inputs: Sequence[str] | None,
) -> Workspace:
    """Copy the project root into ``home / "tree"`` the way ``mode_of`` decides."""
    globs = None if inputs is None else Globs.compile(inputs)
    mode = mode_of(project_root, source)
    tree = home / "tree"
    if mode == "copy":
        root = tree
        _copy(project_root, root, choose(_walk(project_root), service_name, service_path, globs))
        epoch = FALLBACK_EPOCH
    else:
        root = tree / _git_text(project_root, "rev-parse", "--show-prefix")
        epoch = (
            FALLBACK_EPOCH
            if source.commit is None
            else int(_git_text(project_root, "log", "-1", "--format=%ct", source.commit))
        )
        if mode == "clean":
            assert source.commit is not None
            _export(home, project_root, source.commit, tree, service_name, service_path, globs)
        else:
            listed = _git(
                project_root, "ls-files", "-z", "--cached", "--others", "--exclude-standard"
            )
            _copy(project_root, root, choose(_paths(listed), service_name, service_path, globs))
    root.mkdir(parents=True, exist_ok=True)
    files = _settle(tree, epoch)
    facts = WorkspaceFacts(
        mode=mode,
        inputs=None if inputs is None else tuple(inputs),
        files=files,
        source_date_epoch=epoch,
    )
    return Workspace(home=home, tree=tree, root=root, facts=facts)


def _export(
    home: Path,
    project_root: Path,
    commit: str,
    tree: Path,
    service_name: str,
    service_path: str,
    globs: Globs | None,
) -> None:
    """Write the project's part of ``commit`` under ``tree``, as git would check it out."""
    index = {"GIT_INDEX_FILE": str(home / "index")}  # a scratch index: the user's is not ours
    _git(project_root, "read-tree", commit, env=index)
    listed = _paths(_git(project_root, "ls-files", "-z", env=index))
    chosen = choose(listed, service_name, service_path, globs)
    stdin = b"".join(os.fsencode(p) + b"\0" for p in chosen)
    _git(
        project_root,
        "checkout-index",
        "-z",
        "--stdin",
        "--force",
        f"--prefix={tree}/",
        stdin=stdin,
        env=index,
    )
    (home / "index").unlink(missing_ok=True)


def mode_of(project_root: Path, source: GitInfo) -> WorkspaceMode:
    """clean, dirty or copy: what git can vouch for under the project root."""
    if source.commit is None and source.dirty is None:
        return "copy"
    if source.commit is None:
        return "dirty"  # a repository without commits: everything is a change
    if source.dirty is False:
        return "clean"
    # Dirty somewhere in the repository; the project's own part may still be clean.
    status = _git(
        project_root,
        "status",
        "--porcelain",
        "-z",
        "--untracked-files=normal",
        "--",
        ".",
        ":(exclude,glob)**/.conveyor/**",
    )
    return "dirty" if status.strip() else "clean"


def choose(
    listed: Sequence[str], service_name: str, service_path: str, globs: Globs | None
) -> list[str]:
    """The listed paths (relative to the project root) that go into the workspace."""
    kept = [
        p
        for p in listed
        if p and not p.endswith("/") and not SKIPPED_NAMES.intersection(p.split("/"))
    ]
    if globs is None:
        return sorted(set(kept))
    base = PurePosixPath(*[p for p in service_path.split("/") if p not in ("", ".")])
    prefix = "" if not base.parts else f"{base}/"
    under = {p.removeprefix(prefix): p for p in kept if p.startswith(prefix)}
    selected, unused = globs.select(sorted(under))
    if unused:
        shown = ", ".join(f"'{p}'" for p in unused)
        raise BuildFailed(
            f"build inputs of '{service_name}' match no file in '{service_path}': {shown}",
            hint=f"{INPUTS_HINT} (services.{service_name}.build.inputs): globs are relative "
            "to the service path, '**' spans directories, and git-ignored files are never "
            "inputs",
        )
    return [under[p] for p in selected]


def remove_tree(path: Path) -> bool:
    """Delete ``path`` even if the build left read-only directories; whether it is gone."""
    if not os.path.lexists(path):
        return True
    try:
        shutil.rmtree(path)
    except OSError:
        _writable(path)
        with contextlib.suppress(OSError):
            shutil.rmtree(path)
    return not os.path.lexists(path)


def _writable(path: Path) -> None:
    """Give the owner back write access to every directory (Go's module cache drops it)."""
    with contextlib.suppress(OSError):
        path.chmod(0o700)
    for dirpath, dirnames, _ in os.walk(path):
        for name in dirnames:
            child = Path(dirpath, name)
            if not child.is_symlink():
                with contextlib.suppress(OSError):
                    child.chmod(0o700)


def _walk(base: Path) -> list[str]:
    """Every file and symlink under ``base`` (relative POSIX paths), skipping Conveyor's and
    git's state directories."""
    found: list[str] = []
    pending = [("", base)]
    while pending:
        relative, directory = pending.pop()
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.name in SKIPPED_NAMES:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    pending.append((f"{relative}{entry.name}/", Path(entry.path)))
                else:
                    found.append(f"{relative}{entry.name}")
    return found


def _copy(source_root: Path, dest_root: Path, paths: Sequence[str]) -> None:
    """Copy files and symlinks as they are on disk now; anything else (a nested repository,
    a socket, a file deleted since it was listed) is left out."""
    made: set[Path] = set()
    for relative in paths:
        source = source_root / relative
        dest = dest_root / relative
        try:
            info = source.lstat()
            if not (stat.S_ISREG(info.st_mode) or stat.S_ISLNK(info.st_mode)):
                continue
            if dest.parent not in made:
                dest.parent.mkdir(parents=True, exist_ok=True)
                made.add(dest.parent)
            if stat.S_ISLNK(info.st_mode):
                dest.symlink_to(source.readlink())
            else:
                shutil.copyfile(source, dest)
                if info.st_mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH):
                    dest.chmod(0o755)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise BuildFailed(
                f"cannot copy '{relative}' into the build's workspace: {exc.strerror or exc}",
                hint=f"check that {source} is readable, and that the disk holding "
                f"{dest_root} has space",
            ) from exc


def _settle(tree: Path, epoch: int) -> int:
    """Date everything ``epoch``, make modes independent of the umask; count the files."""
    files = 0
    for dirpath, dirnames, filenames in os.walk(tree, topdown=False):
        for name in [*filenames, *dirnames]:
            path = Path(dirpath, name)
            info = path.lstat()
            if not stat.S_ISLNK(info.st_mode):
                # Readable by all, as a checkout is; the archive records modes the same way.
                executable = stat.S_ISDIR(info.st_mode) or info.st_mode & stat.S_IXUSR
                path.chmod(0o755 if executable else 0o644)
            files += not stat.S_ISDIR(info.st_mode)
            os.utime(path, (epoch, epoch), follow_symlinks=False)
    os.utime(tree, (epoch, epoch))
    return files


def _paths(output: bytes) -> list[str]:
    return [os.fsdecode(p) for p in output.split(b"\0") if p]


def _git_text(cwd: Path, *args: str) -> str:
    return os.fsdecode(_git(cwd, *args)).strip()


def _git(
    cwd: Path, *args: str, stdin: bytes | None = None, env: Mapping[str, str] | None = None
) -> bytes:
    """stdout of a git command that must succeed for the workspace to be right."""
    done = run_git(cwd, *args, stdin=stdin, env=env, timeout=_GIT_TIMEOUT)
    if done is None:
        raise BuildFailed(
            f"git stopped working while the build's workspace was made (git {args[0]})",
            hint="check that git is installed and on PATH, then build again",
        )
    if done.returncode != 0:
        said = os.fsdecode(done.stderr).strip().splitlines()
        raise BuildFailed(
            f"git {args[0]} failed while the build's workspace was made: "
            f"{said[-1] if said else f'exit code {done.returncode}'}",
            hint=f"run `git status` in {cwd} and fix what it reports, then build again",
        )
    return done.stdout
