"""Where everything of a project lives under ``.conveyor/``: one object, one spelling.

Every part of Conveyor that reads or writes local state asks a ``Layout`` for the path
instead of joining strings, so the layout can be read (and changed) in one place, and
nothing needs to know where anything else keeps its files::

    .conveyor/
      state.db                 the SQLite store (unless CONVEYOR_DATABASE_URL is set)
      server.json server.lock server.log     the running server, for the CLI
      admin.token              the local user's admin token (0600), used by the CLI
      artifacts/sha256/        content-addressed archives and their signed envelopes
      unpacked/<hex>/          each archive extracted once, for instances to run from
      keys/                    (before 0.2) the signing key; moved out on upgrade, see below
      runtime/                 instance records and logs of the local target
      routers/                 the router process (builtin/: lock, socket, secret, saved
                               routes) and HAProxy (haproxy/: config, sockets, book)
      builds/                  build logs; builds/slots/ bounds concurrent builds
      workspaces/              one private copy of the tree per running build
      runs/                    pipeline run records (evidence)
      cache/                   pipeline caches, shared on purpose
      tmp/                     scratch space on the same file system as the stores

The directory is private to the user who owns the project's state (0700) and kept out
of git by its own ``.gitignore``. Everything in it may hold config, output or identity, so
every writer creates files readable only by their owner (``private_file``,
``private_directory``, or ``os.open(..., 0o600)``), and the server, at start, takes group
and other permissions away from whatever an earlier version left readable (``tighten``).
Unpacked artifact trees are the one exception in shape, not in privacy: they are made
read-only (files 0444, or 0555 when executable; directories 0555), so an instance running
from one cannot change the bytes that are served under the artifact's digest.

Processes that run as another user (``run_as``) need a way in to exactly one thing: an
instance to its unpacked tree, a build or a job to its workspace. ``open_passage`` gives
it by letting others *search* (not list, not read) the few directories on that way —
``.conveyor/``, ``unpacked/``, ``workspaces/`` and a workspace's own directory become 0711
— the first time such a process starts. Everything else keeps 0700/0600, so that user can
open a path only if it knows the name, and every name it could know (``admin.token``,
``state.db``, ``keys/``) is private. An unpacked tree is readable by all behind its
unguessable digest; a workspace's copy of the project is owned by the user it runs as.

Pure path arithmetic except ``ensure`` and the permission helpers at the end, so importing
it costs nothing (the CLI does).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from conveyor.errors import ConfigError, ConfigProblem

STATE_DIR = ".conveyor"
CONFIG_NAMES = ("conveyor.yaml", "conveyor.yml")


@dataclass(frozen=True)
class Layout:
    """The ``.conveyor/`` directory of the project rooted at ``root``."""

    root: Path

    @property
    def state(self) -> Path:
        return self.root / STATE_DIR

    def ensure(self) -> Layout:
        """Create ``.conveyor/`` (private, git-ignored) if it is not there yet."""
        state = self.state
        if not state.exists():
            state.parent.mkdir(parents=True, exist_ok=True)
            state.mkdir(mode=0o700, exist_ok=True)
            ignore = state / ".gitignore"
            if not ignore.exists():
                private_file(ignore, "# Conveyor's local state\n*\n")
        return self

    def directory(self, path: Path, mode: int = 0o700) -> Path:
        """``path`` (inside the state directory) created if missing, and returned."""
        self.ensure()
        return private_directory(path, mode)

    # --- the server --------------------------------------------------------------------

    @property
    def database(self) -> Path:
        return self.state / "state.db"

    @property
    def server_file(self) -> Path:
        return self.state / "server.json"

    @property
    def server_lock(self) -> Path:
        return self.state / "server.lock"

    @property
    def admin_token(self) -> Path:
        """The local user's admin token, made at the server's first start (0600)."""
        return self.state / "admin.token"

    @property
    def server_log(self) -> Path:
        return self.state / "server.log"

    # --- artifacts and keys --------------------------------------------------------------

    @property
    def artifacts(self) -> Path:
        return self.state / "artifacts" / "sha256"

    @property
    def unpacked(self) -> Path:
        return self.state / "unpacked"

    @property
    def legacy_keys(self) -> Path:
        """Where the signing key lived before it moved out of the project tree."""
        return self.state / "keys"

    @property
    def server_keys(self) -> Path:
        """The server's signing key: outside the project tree, so no job or instance working
        in the tree can read it (``$CONVEYOR_KEY_DIR``, else ``$XDG_DATA_HOME/conveyor/keys``,
        else ``~/.local/share/conveyor/keys``; one directory per project)."""
        return key_home() / hashlib.sha256(str(self.root.resolve()).encode()).hexdigest()[:16]

    # --- the data plane ---------------------------------------------------------------

    @property
    def runtime(self) -> Path:
        return self.state / "runtime"

    @property
    def instance_logs(self) -> Path:
        return self.runtime / "logs"

    @property
    def routers(self) -> Path:
        return self.state / "routers"

    # --- builds and pipelines ---------------------------------------------------------

    @property
    def builds(self) -> Path:
        return self.state / "builds"

    @property
    def build_slots(self) -> Path:
        return self.builds / "slots"

    @property
    def workspaces(self) -> Path:
        return self.state / "workspaces"

    @property
    def runs(self) -> Path:
        return self.state / "runs"

    @property
    def cache(self) -> Path:
        return self.state / "cache"

    @property
    def tmp(self) -> Path:
        return self.state / "tmp"


def key_home() -> Path:
    explicit = os.environ.get("CONVEYOR_KEY_DIR", "").strip()
    if explicit:
        return Path(explicit)
    data = os.environ.get("XDG_DATA_HOME", "").strip()
    base = Path(data) if data else Path.home() / ".local" / "share"
    return base / "conveyor" / "keys"


def find_config(start: Path) -> Path:
    """The conveyor.yaml (or conveyor.yml) in ``start``; a file path is returned as is.

    Here rather than beside the config models so the CLI can find a project without
    importing them (they cost more than the whole of a status command).
    """
    if start.is_file():
        return start
    for name in CONFIG_NAMES:
        candidate = start / name
        if candidate.is_file():
            return candidate
    where = "no such directory" if not start.exists() else f"no {CONFIG_NAMES[0]} in {start}"
    raise ConfigError(
        [
            ConfigProblem(
                file=str(start / CONFIG_NAMES[0]),
                line=None,
                field="(file)",
                message=where,
                hint="run inside a project or pass -C DIR",
            )
        ]
    )


def find_root(start: Path) -> Path:
    """The project root for ``start``: the directory, or the file's directory."""
    start = start.resolve()
    return start.parent if start.is_file() else start


def private_directory(path: Path, mode: int = 0o700) -> Path:
    """``path`` created if missing, it and every parent it had to create with ``mode``.

    (``Path.mkdir(parents=True)`` gives the parents the default mode, not ``mode``.)
    """
    missing = []
    current = path
    while not current.exists():
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):  # made by someone else in the meantime
            directory.mkdir(mode=mode)
    return path


def private_file(path: Path, data: bytes | str, mode: int = 0o600) -> None:
    """Write ``path`` atomically, readable only by its owner.

    The data goes to a temp file of this call's own (a new name, created exclusively, 0600)
    that is then renamed over ``path``. Its own, not one per process: threads write the same
    file at once (every build starting on a new project writes ``.conveyor/.gitignore``), and
    with a shared temp file the first rename took it from under the others. Now each write
    replaces ``path`` whole and the last one wins.
    """
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data.encode() if isinstance(data, str) else data)
        tmp.chmod(mode)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# --- permissions ------------------------------------------------------------------------

Rule = Callable[[int], int]
"""From a path's current ``st_mode`` to the permission bits it should have."""

READ_ONLY_FILE = 0o444
READ_ONLY_PROGRAM = 0o555
READ_ONLY_DIRECTORY = 0o555


def read_only_mode(mode: int) -> int:
    """An unpacked artifact's permissions: readable, executable where it was, never writable."""
    if stat.S_ISDIR(mode):
        return READ_ONLY_DIRECTORY
    return READ_ONLY_PROGRAM if mode & 0o111 else READ_ONLY_FILE


def private_mode(mode: int) -> int:
    """Everything else under ``.conveyor/``: the owner's bits as they are, nobody else's."""
    return stat.S_IMODE(mode) & 0o700


def passage_mode(mode: int) -> int:
    """A directory on the way to what another user may open: 0711 if Conveyor opened it.

    Exactly search for group and others (what ``open_passage`` sets) is kept; anything else
    given to them (an earlier version's 0755) is taken away, as everywhere else.
    """
    owner = stat.S_IMODE(mode) & 0o700
    return owner | PASSAGE_BITS if stat.S_IMODE(mode) & 0o077 == PASSAGE_BITS else owner


PASSAGE_BITS = 0o011
PASSAGES = ((), ("unpacked",), ("workspaces",), ("workspaces", "*"))
"""Directories under ``.conveyor/`` that may be a passage, relative to it ("*": any name)."""


def is_passage(path: Path, state: Path) -> bool:
    try:
        parts = path.relative_to(state).parts
    except ValueError:
        return False
    return any(
        len(parts) == len(p) and all(a == "*" or a == b for a, b in zip(p, parts, strict=True))
        for p in PASSAGES
    )


def open_passage(path: Path) -> list[Path]:
    """Let other users search the directories of ``.conveyor/`` on the way to ``path``.

    Only the ``PASSAGES`` among ``path``'s ancestors inside the ``.conveyor/`` that holds it
    are changed (to owner bits plus 0o011); a path outside any ``.conveyor/`` changes
    nothing. Returns the directories changed, so the caller can say so.
    """
    resolved = path.resolve()
    state = next((p for p in resolved.parents if p.name == STATE_DIR), None)
    if state is None:
        return []
    opened = []
    for directory in resolved.parents:
        if not is_passage(directory, state):
            continue
        current = stat.S_IMODE(directory.stat().st_mode)
        wanted = (current & 0o700) | PASSAGE_BITS
        if current != wanted:
            directory.chmod(wanted)
            opened.append(directory)
        if directory == state:
            break
    return opened


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def make_read_only(root: Path) -> None:
    """Turn an unpacked tree read-only (files first, then directories from the bottom up)."""
    for directory, subdirectories, files in os.walk(root, topdown=False):
        for name in [*files, *subdirectories]:
            _apply(Path(directory) / name, read_only_mode)
    _apply(root, read_only_mode)


def remove_tree(root: Path) -> None:
    """``shutil.rmtree`` for a tree that may be read-only (an unpacked artifact)."""

    def make_writable_and_retry(function: Callable[[str], object], name: str, _: object) -> None:
        path = Path(name)
        path.parent.chmod(0o700)
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o700)
        function(name)

    if root.is_dir() and not root.is_symlink():
        root.chmod(0o700)
        shutil.rmtree(root, onerror=make_writable_and_retry)


@dataclass
class Tightened:
    """What ``tighten`` changed (paths relative to ``.conveyor/``) and what it could not."""

    changed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    dry_run: bool = False


def tighten(layout: Layout, *, dry_run: bool = False) -> Tightened:
    """Take away what earlier versions left readable to others under ``.conveyor/``.

    Called by the server at every start, before anything is served: ``.conveyor/`` itself
    0700 (0711 once it is a passage, see ``passage_mode``); every file and directory in it
    loses its group and other bits (state.db and its
    WAL, server.json, run records, build and instance logs, instance records, keys);
    unpacked artifact trees become read-only (``read_only_mode``), except an unpack still
    in progress (``unpacked/.tmp-*``). Symbolic links are neither followed nor changed.
    It only ever takes permissions away from group and others (and write from unpacked
    trees), so a second run changes nothing, and a path it may not change (another user's)
    is reported, not fatal. ``dry_run`` only reports what it would change (`conveyor doctor`).
    """
    result = Tightened(dry_run=dry_run)
    state = layout.state
    if not state.is_dir() or state.is_symlink():
        return result
    _tighten(state, passage_mode, state, result)
    for directory, subdirectories, files in os.walk(state):
        here = Path(directory)
        if here == layout.unpacked:
            # Each unpacked tree read-only; an unpack in progress (``.tmp-*``) stays private.
            trees = [d for d in subdirectories if not d.startswith(".tmp-")]
            subdirectories[:] = [d for d in subdirectories if d.startswith(".tmp-")]
            for name in trees:
                tree = here / name
                # A read-only root means the tree was finished that way (make_read_only
                # does the root last): no need to walk every file of every artifact again.
                if not tree.is_symlink() and mode_of(tree) != READ_ONLY_DIRECTORY:
                    _tighten_tree(tree, state, result)
        for name in subdirectories:
            path = here / name
            _tighten(path, passage_mode if is_passage(path, state) else private_mode, state, result)
        for name in files:
            _tighten(here / name, private_mode, state, result)
    return result


def _tighten_tree(root: Path, state: Path, result: Tightened) -> None:
    for directory, subdirectories, files in os.walk(root, topdown=False):
        for name in [*files, *subdirectories]:
            _tighten(Path(directory) / name, read_only_mode, state, result)
    _tighten(root, read_only_mode, state, result)


def _tighten(path: Path, rule: Rule, state: Path, result: Tightened) -> None:
    try:
        info = path.lstat()
    except FileNotFoundError:
        return
    if stat.S_ISLNK(info.st_mode) or stat.S_IMODE(info.st_mode) == rule(info.st_mode):
        return
    name = "." if path == state else str(path.relative_to(state))
    if result.dry_run:
        result.changed.append(name)
        return
    try:
        path.chmod(rule(info.st_mode))
    except OSError:
        result.failed.append(name)
        return
    result.changed.append(name)


def _apply(path: Path, rule: Rule) -> None:
    info = path.lstat()
    if not stat.S_ISLNK(info.st_mode):
        path.chmod(rule(info.st_mode))
