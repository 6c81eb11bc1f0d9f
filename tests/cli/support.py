"""Run the real `conveyor` command in a child process, the way a user's shell does.

Every test in this package goes through ``conveyor(...)``: a fresh interpreter, real files,
real servers. The environment is pinned so results do not depend on the caller's shell:
``CONVEYOR_DATABASE_URL`` is dropped (each temp project keeps its own SQLite file), so is
``CONVEYOR_TOKEN`` (each temp server makes its own admin token), and
``COLUMNS`` is set wide because rich hard-wraps at 80 columns when stdout is not a terminal
(that wrapping is a known bug with its own strict xfail in test_validate.py; the other tests
should fail for their own reasons, not for that one).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WIDE = "250"


def cli_env(**extra: str) -> dict[str, str]:
    dropped = ("CONVEYOR_DATABASE_URL", "CONVEYOR_TOKEN", "COLUMNS")
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env["COLUMNS"] = WIDE
    env.update(extra)
    return env


@dataclass(frozen=True)
class Result:
    """One finished `conveyor` invocation."""

    args: tuple[str, ...]
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def json(self) -> Any:
        try:
            return json.loads(self.stdout)
        except ValueError as exc:
            raise AssertionError(f"{self} did not print JSON: {exc}") from None

    def __str__(self) -> str:
        return (
            f"`conveyor {' '.join(self.args)}` exited {self.code}\n"
            f"--- stdout\n{self.stdout[-3000:]}\n--- stderr\n{self.stderr[-3000:]}"
        )


def conveyor(
    *args: str | Path,
    root: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> Result:
    """``python -m conveyor [-C root] ARGS``; never raises on a non-zero exit."""
    argv = [str(a) for a in args]
    if root is not None:
        argv = ["-C", str(root), *argv]
    done = subprocess.run(
        [sys.executable, "-m", "conveyor", *argv],
        capture_output=True,
        text=True,
        env=env if env is not None else cli_env(),
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    return Result(tuple(argv), done.returncode, done.stdout, done.stderr)


def assert_clean_error(result: Result, code: int) -> None:
    """A user error: the expected exit code, a message, never a Python traceback."""
    assert result.code == code, result
    assert "Traceback" not in result.output, result
    assert "error" in result.output.lower(), result


def processes_of(root: Path, project: str) -> list[tuple[int, str]]:
    """Live processes belonging to a project: its instances (by their Conveyor environment
    variables) and its server (by the project directory on its command line)."""
    markers = (
        f"CONVEYOR_PROJECT={project}".encode(),
        f"CONVEYOR_STATE_DIR={root.resolve() / '.conveyor' / 'runtime'}".encode(),
    )
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue
        if state == "Z":
            continue
        if any(m in environ for m in markers) or str(root.resolve()) in cmdline:
            found.append((int(entry.name), cmdline))
    return found
