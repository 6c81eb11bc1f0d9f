"""The runtime's side of fencing: the highest lease epoch seen per environment, on disk.

Every server on a host shares the runtime's state directory, so the fence lives there:
``epochs/<env>`` holds the highest epoch any server started, adopted or restarted an
instance of that environment with. A start carrying a lower epoch comes from a server that
lost the environment's lease (it was paused, then woke up) and is refused — it would
otherwise restart an instance the new leader just stopped, or start a duplicate.

Each check-and-raise happens under an exclusive ``flock`` of that file, so two servers
cannot both pass with different epochs. Epoch 0 is "not fenced" (a target used without
leases) and always passes (``core.leases.admits``).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from conveyor.core.leases import admits
from conveyor.errors import Fenced
from conveyor.layout import private_directory
from conveyor.runtime.local.records import check_name

MAX_EPOCH_FILE = 32
"""Bytes read from an epoch file (a decimal integer)."""


class EpochRegister:
    """``admit(env, epoch)``: raise Fenced for a stale epoch, remember a newer one."""

    def __init__(self, state_dir: Path) -> None:
        self.directory = state_dir / "epochs"

    def admit(self, env: str, epoch: int, what: str) -> None:
        if epoch == 0:
            return
        check_name("environment", env)
        private_directory(self.directory)
        fd = os.open(self.directory / env, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            seen = _parse(os.pread(fd, MAX_EPOCH_FILE, 0))
            if not admits(seen, epoch):
                raise Fenced(
                    f"refused to {what} in environment {env!r} at epoch {epoch}: a server "
                    f"holding epoch {seen} drives it now",
                    hint="this server lost the environment's lease; the current holder "
                    "supervises its instances",
                )
            if epoch > seen:
                data = str(epoch).encode()
                os.ftruncate(fd, 0)
                os.pwrite(fd, data, 0)
        finally:
            os.close(fd)  # closing drops the lock

    def seen(self, env: str) -> int:
        try:
            return _parse((self.directory / env).read_bytes()[:MAX_EPOCH_FILE])
        except FileNotFoundError:
            return 0


def _parse(data: bytes) -> int:
    text = data.decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else 0
