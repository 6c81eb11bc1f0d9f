"""``run_as:``: the unprivileged user instances, builds and pipeline jobs run as.

Processes of one user can read each other's files and memory. Conveyor keeps what vouches
for code (the server's signing key, the admin token, the state) readable only by its own
user, so code that runs as that same user could read it all: a job could forge evidence, an
instance could take over the API. Running that code as another, unprivileged user is what
makes ``.conveyor/`` a boundary rather than a convention. Only root may start a process as
another user, which is why this matters most, and is only possible, when Conveyor runs as
root — the common case on CI machines and in containers.

The value is ``user`` or ``user:group`` (the user's primary group by default). It names an
account of the host where the process starts, so conveyor.yaml only checks its spelling;
whether the account exists is checked where it is used: by the server when a release is
created, by the runtime when an instance starts, by a build or ``conveyor run`` before they
start anything. Supplementary groups are dropped (``extra_groups=[]``): a group the process
needs is named in the value, not inherited from root.

Most of this module is pure (``split``, ``switch_problem``, ``permits``, ``barrier_in``,
``root_warning``); the rest reads the password database or the file system, or changes who
owns a tree, and says so. It sits beside ``layout`` rather than in a layer because the
runtime, the builds and the pipeline runner (siblings that may not import each other) and
the CLI all need the same answers.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NAME_PATTERN = r"[A-Za-z_][A-Za-z0-9_.-]{0,31}"
RUN_AS_PATTERN = rf"^{NAME_PATTERN}(:{NAME_PATTERN})?$"
"""``user`` or ``user:group``: names as useradd and groupadd accept them, at most 32 long."""

EXAMPLE = "conveyor-run"
CREATE_HINT = f"useradd --system --no-create-home --shell /usr/sbin/nologin {EXAMPLE}"
NEUTRAL_HOME = "/"
"""HOME for an instance whose account has no home directory of its own: it exists, and an
unprivileged user can write nothing in it, so a tool that wants a cache fails loudly rather
than writing somewhere shared."""

READ, WRITE, SEARCH = 4, 2, 1


class UnknownUser(LookupError):
    """The account or group a ``run_as`` names does not exist on this host."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class User:
    """An account of this host, resolved: what a process is started with."""

    name: str
    uid: int
    gid: int
    group: str
    home: str  # from the password database; may not exist

    def __str__(self) -> str:
        return f"{self.name} (uid {self.uid}, gid {self.gid})"

    @property
    def is_root(self) -> bool:
        return self.uid == 0


@dataclass(frozen=True)
class Switch:
    """Start processes as ``user``, with ``home`` as their HOME."""

    user: User
    home: str

    def popen(self) -> dict[str, Any]:
        return popen_arguments(self.user)

    def environment(self) -> dict[str, str]:
        return login_environment(self.user, self.home)


class CannotSwitch(Exception):
    """``require`` could not give the user a ``run_as`` names: the message says why."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def split(run_as: str) -> tuple[str, str | None]:
    """``user[:group]`` as (user, group or None)."""
    user, _, group = run_as.partition(":")
    return user, group or None


def lookup(run_as: str) -> User:
    """The account ``run_as`` names on this host; UnknownUser says which part is missing."""
    name, group = split(run_as)
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise UnknownUser(f"there is no user {name!r} on this host") from None
    gid = entry.pw_gid
    if group is not None:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise UnknownUser(f"there is no group {group!r} on this host") from None
    return User(name, entry.pw_uid, gid, group or _group_name(gid), entry.pw_dir)


def require(run_as: str, server: User) -> User | None:
    """The user to switch to for ``run_as``; None when it is ``server`` itself.

    CannotSwitch when the account is missing or ``server`` may not become it.
    """
    try:
        user = lookup(run_as)
    except UnknownUser as exc:
        raise CannotSwitch(exc.message) from None
    problem = switch_problem(user, server)
    if problem is not None:
        raise CannotSwitch(problem)
    return user if needs_switch(user, server) else None


def current() -> User:
    """Who this process runs as (its effective ids)."""
    uid, gid = os.geteuid(), os.getegid()
    try:
        entry = pwd.getpwuid(uid)
    except KeyError:  # a container may run an id the password database does not know
        return User(str(uid), uid, gid, _group_name(gid), os.environ.get("HOME", NEUTRAL_HOME))
    return User(entry.pw_name, uid, gid, _group_name(gid), entry.pw_dir)


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


# --- pure decisions --------------------------------------------------------------------


def switch_problem(target: User, server: User) -> str | None:
    """Why a process of ``server`` cannot start one as ``target``, or None.

    Root may become anyone; anyone else only themselves (then ``run_as`` changes nothing).
    """
    if server.is_root or (target.uid == server.uid and target.gid == server.gid):
        return None
    return (
        f"it runs as {server.name} (uid {server.uid}), not root, and only root may start a "
        f"process as another user ({target})"
    )


def needs_switch(target: User | None, server: User) -> bool:
    """Whether starting as ``target`` means changing ids at all."""
    return target is not None and (target.uid, target.gid) != (server.uid, server.gid)


def permits(mode: int, owner: int, group: int, user: User, want: int) -> bool:
    """Whether ``user`` (with no supplementary groups) gets ``want`` (READ|WRITE|SEARCH bits).

    POSIX picks exactly one class — owner, else group, else others — and only its bits count;
    root passes every check except execute/search, which needs some x bit. ACLs are not read.
    """
    if user.is_root:
        return not want & SEARCH or bool(mode & 0o111) or stat.S_ISDIR(mode)
    if user.uid == owner:
        bits = (mode >> 6) & 7
    elif user.gid == group:
        bits = (mode >> 3) & 7
    else:
        bits = mode & 7
    return bits & want == want


@dataclass(frozen=True)
class Step:
    """One directory or file on the way to a path, as ``os.stat`` saw it."""

    path: Path
    mode: int
    owner: int
    group: int

    def describe(self) -> str:
        owner = f"owner uid {self.owner}, gid {self.group}"
        return f"{self.path} is {stat.filemode(self.mode)} ({owner})"


def barrier_in(steps: Sequence[Step], user: User, final: int) -> Step | None:
    """The first step ``user`` may not pass: search on every directory, ``final`` on the last."""
    for index, step in enumerate(steps):
        want = final if index == len(steps) - 1 else SEARCH
        if not permits(step.mode, step.owner, step.group, user, want):
            return step
    return None


def root_warning(
    server: User, services: Mapping[str, str | None], jobs: Sequence[str | None] = ()
) -> str | None:
    """The sentence `conveyor up`, `conveyor run`, the server's log and `conveyor doctor`
    print when code runs as root for want of a ``run_as``; None when nothing does.

    ``services`` maps each service to its ``run_as`` (its instances and builds), ``jobs``
    holds the pipeline's (empty: no pipeline). Only root is warned: any other user cannot
    switch, and its code runs as the ordinary user that owns ``.conveyor/`` anyway.
    """
    if not server.is_root:
        return None
    bare = [name for name, run_as in services.items() if _as_root(run_as)]
    parts = [f"the instances and builds of {_listed(bare)}"] if bare else []
    if any(_as_root(run_as) for run_as in jobs):
        parts.append("pipeline jobs")
    if not parts:
        return None
    return (
        f"Conveyor runs as root and {', and '.join(parts)} run as root too (no unprivileged "
        "run_as:): that code can read .conveyor/ (the state, admin.token, the keys), so "
        "attestations are only as strong as root's isolation. Set run_as: in conveyor.yaml "
        f"to an unprivileged user (e.g. {EXAMPLE}; see SECURITY.md)."
    )


def _as_root(run_as: str | None) -> bool:
    """No ``run_as``, or one that names root itself (by name: what the file says)."""
    return run_as is None or split(run_as)[0] == "root"


def _listed(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


# --- the file system --------------------------------------------------------------------


def barrier(path: Path, user: User, final: int = READ | SEARCH) -> str | None:
    """Why ``user`` cannot reach ``path`` (with ``final`` access on it), or None.

    Checked from the mode bits of every directory on the (resolved) way, as the kernel will
    check them once the process runs as ``user`` — ``os.access`` would answer for root.
    """
    try:
        resolved = path.resolve(strict=True)
    except (OSError, RuntimeError) as exc:
        return f"{path} cannot be resolved: {exc}"
    steps = []
    for each in [*reversed(resolved.parents), resolved]:
        try:
            info = each.stat()
        except OSError as exc:
            return f"{each} cannot be read: {exc.strerror or exc}"
        steps.append(Step(each, info.st_mode, info.st_uid, info.st_gid))
    blocked = barrier_in(steps, user, final)
    return None if blocked is None else blocked.describe()


def home_of(user: User) -> str:
    """The account's home if it is a directory the account owns, else ``NEUTRAL_HOME``."""
    try:
        info = Path(user.home).stat()
    except OSError:
        return NEUTRAL_HOME
    return user.home if stat.S_ISDIR(info.st_mode) and info.st_uid == user.uid else NEUTRAL_HOME


def popen_arguments(user: User | None) -> dict[str, Any]:
    """``subprocess.Popen`` arguments that start the child as ``user``: its uid and gid, no
    supplementary groups (the kernel switches in the child; no ``preexec_fn``)."""
    if user is None:
        return {}
    return {"user": user.uid, "group": user.gid, "extra_groups": []}


def login_environment(user: User, home: str) -> dict[str, str]:
    """The variables that say who a process is, replacing the server's own."""
    return {"HOME": home, "USER": user.name, "LOGNAME": user.name}


def hand_over(root: Path, user: User) -> None:
    """Make ``root`` and everything below it ``user``'s (symbolic links are not followed)."""
    for directory, subdirectories, files in os.walk(root):
        for name in [*subdirectories, *files]:
            os.chown(Path(directory, name), user.uid, user.gid, follow_symlinks=False)
    os.chown(root, user.uid, user.gid, follow_symlinks=False)


def reclaim(root: Path) -> None:
    """Make a tree another user wrote ours again, and writable by nobody else.

    Before reading what a build left behind as root: every directory is taken over *before*
    it is listed, so a process of that user that outlived the build cannot add or swap an
    entry (a symbolic link to a file only root may read, say) behind the walk.
    """
    uid, gid = os.geteuid(), os.getegid()
    pending = [root]
    while pending:
        directory = pending.pop()
        _take(directory, uid, gid)
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    pending.append(Path(entry.path))
                else:
                    _take(Path(entry.path), uid, gid)


def _take(path: Path, uid: int, gid: int) -> None:
    os.chown(path, uid, gid, follow_symlinks=False)
    info = path.lstat()
    if not stat.S_ISLNK(info.st_mode):
        path.chmod(stat.S_IMODE(info.st_mode) & ~0o022)
