"""Where the router process keeps its files, and the two it shares with the server.

Everything lives in ``.conveyor/routers/builtin/`` (0700)::

    router.lock      held (flock) by the running router for its whole life: a second one
                     refuses to start, and "is a router running?" is "is the lock held?",
                     which survives pid reuse and SIGKILL (the kernel drops the lock)
    router.json      pid, boot id, protocol version and socket of the running router
    control.sock     the control socket (0600); in a private /tmp directory instead when
                     the project path is too long for a Unix socket name
    control.secret   the shared secret both sides prove they hold (0600)
    routes.json      the last listeners and route tables the router was given (0600): a
                     restarted router serves them before any server speaks to it
    spawn.lock       taken by a server while it finds or starts the router, so two servers
                     overlapping during an upgrade never start two routers
    router.log       the router's own output
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conveyor.errors import Unavailable

_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes on Linux


@dataclass(frozen=True)
class RouterPaths:
    directory: Path
    sockets: Path

    @classmethod
    def of(cls, state_dir: Path) -> RouterPaths:
        """The files of the router whose state lives under ``state_dir`` (``.conveyor/routers``)."""
        directory = state_dir.resolve() / "builtin"
        sockets = directory
        if len(str(directory / "control.sock")) > _SOCKET_PATH_MAX:
            digest = hashlib.sha256(str(directory).encode()).hexdigest()[:12]
            sockets = Path(tempfile.gettempdir()) / f"conveyor-router-{digest}"
        return cls(directory, sockets)

    @property
    def lock(self) -> Path:
        return self.directory / "router.lock"

    @property
    def spawn_lock(self) -> Path:
        return self.directory / "spawn.lock"

    @property
    def state(self) -> Path:
        return self.directory / "router.json"

    @property
    def socket(self) -> Path:
        return self.sockets / "control.sock"

    @property
    def secret(self) -> Path:
        return self.directory / "control.secret"

    @property
    def routes(self) -> Path:
        return self.directory / "routes.json"

    @property
    def log(self) -> Path:
        return self.directory / "router.log"

    def ensure(self) -> RouterPaths:
        for path in {self.directory, self.sockets}:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            info = path.stat()
            if info.st_uid != os.getuid():
                raise Unavailable(
                    f"{path} belongs to another user; the router will not keep files there",
                    hint="remove that directory, or move the project to a shorter path",
                )
            if info.st_mode & 0o077:
                path.chmod(0o700)
        return self


def write_private(path: Path, data: str) -> None:
    """Replace ``path`` atomically with ``data``, readable by its owner only."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(data)
        Path(name).replace(path)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise


def read_secret(paths: RouterPaths, *, create: bool) -> bytes:
    """The shared secret; made (0600) by the first server that needs it when ``create``."""
    try:
        raw = paths.secret.read_bytes().strip()
    except FileNotFoundError:
        if not create:
            raise Unavailable(
                f"the router's control secret {paths.secret} is missing",
                hint="start the server (`conveyor up`): it makes the secret and the router",
            ) from None
        raw = b""
    if len(raw) >= 32:
        return raw
    if not create:
        raise Unavailable(f"the router's control secret {paths.secret} is too short")
    paths.secret.unlink(missing_ok=True)  # empty or truncated: useless to anyone
    try:
        fd = os.open(paths.secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another server made it meanwhile
        return read_secret(paths, create=False)
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_hex(32))
    return paths.secret.read_bytes().strip()


def lock_held(path: Path) -> bool:
    """Whether some process holds the flock on ``path`` (the router is alive)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def read_state(paths: RouterPaths) -> dict[str, Any] | None:
    """What the running router published about itself, if anything readable."""
    try:
        state = json.loads(paths.state.read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None
