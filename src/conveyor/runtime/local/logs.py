"""Instance log files, the markers the runtime adds to them, and reading their tails.

An instance writes its own stdout and stderr to ``logs/<service>/<env>/<instance_id>.log``;
the runtime appends one-line ``--- ... ---`` markers to the same file (both use O_APPEND, so
lines never overwrite each other). Reading a log therefore tells the whole story of an
instance in order: each start with its pid and port, what the process printed, how it
exited, each restart. Log files outlive their instances so ``conveyor logs`` can explain a
failed rollout after the fact.

A log holds whatever a service printed, so it is the user's alone: files 0600, directories
0700. An instance given secrets writes through the masking relay (``runtime.relay``), so
what it prints of them is masked before it reaches the file.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from conveyor import layout

_BLOCK = 8192


def log_dir(root: Path, service: str, env: str) -> Path:
    return root / service / env


def log_path(root: Path, service: str, env: str, instance_id: str) -> Path:
    return log_dir(root, service, env) / f"{instance_id}.log"


def log_files(root: Path, service: str, env: str) -> list[Path]:
    """Log files of a service in an environment, oldest first (by last write)."""
    directory = log_dir(root, service, env)
    if not directory.is_dir():
        return []
    files = [p for p in directory.glob("*.log") if p.is_file()]
    return sorted(files, key=lambda p: (p.stat().st_mtime, p.name))


def iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds")


def started_marker(pid: int, port: int, at: float, restarts: int) -> str:
    return f"--- started pid {pid} port {port} at {iso(at)} (restart {restarts}) ---"


def private_directory(path: Path) -> None:
    """``path`` and its missing parents, created readable only by the user."""
    layout.private_directory(path)


def open_log(path: Path) -> int:
    """An append-only descriptor of ``path``, created 0600 (never readable by others)."""
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)


def append_marker(path: Path, text: str) -> None:
    """Append one line; a log that cannot be written must never stop supervision."""
    try:
        private_directory(path.parent)
        fd = open_log(path)
        try:
            os.write(fd, text.encode() + b"\n")
        finally:
            os.close(fd)
    except OSError:
        pass


def tail(path: Path, lines: int) -> list[str]:
    """The last ``lines`` lines of a text file, read backwards so huge logs cost little.

    Undecodable bytes are replaced rather than raised: a log is whatever the service printed.
    A missing file has no lines.
    """
    if lines <= 0:
        return []
    try:
        with path.open("rb") as f:
            end = f.seek(0, os.SEEK_END)
            data = b""
            position = end
            while position > 0 and data.count(b"\n") <= lines:
                step = min(_BLOCK, position)
                position -= step
                f.seek(position)
                data = f.read(step) + data
    except FileNotFoundError:
        return []
    text = data.decode(errors="replace")
    result = text.split("\n")
    if result and result[-1] == "":
        result.pop()  # the newline that ends the last line does not start another
    if position > 0:
        result = result[1:]  # the first line may have been cut by the block boundary
    return result[-lines:]
