"""What Linux's /proc says about processes: identity, group, and the runtime's tag.

A pid alone does not name a process — the kernel reuses pids — so the runtime names one by
(pid, start time in clock ticks since boot, field 22 of /proc/<pid>/stat). A zombie has
already exited; it only waits for its parent to collect its exit status, so it counts as
gone everywhere here.

Every instance carries ``CONVEYOR_STATE_DIR=<state dir>`` and ``CONVEYOR_INSTANCE_ID=<id>`` in
its environment, which its children inherit. Reading /proc/<pid>/environ finds them again
after the server that spawned them died, even when it died before writing their pid down.
The state dir, not the project name, scopes the search: two checkouts of one project, or two
test runs on one machine, must never adopt or kill each other's instances.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from conveyor.runtime.local.policy import TaggedProcess

PROC = Path("/proc")
STATE_DIR_VAR = "CONVEYOR_STATE_DIR"
INSTANCE_VAR = "CONVEYOR_INSTANCE_ID"


@dataclass(frozen=True)
class ProcStat:
    pid: int
    state: str
    pgid: int
    start_ticks: int

    @property
    def exited(self) -> bool:
        return self.state in ("Z", "X", "x")


def read_stat(pid: int) -> ProcStat | None:
    """The process's state, group and start time; None if there is no such pid."""
    try:
        data = (PROC / str(pid) / "stat").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError, NotADirectoryError):
        return None
    # the command name (field 2) may contain spaces and parentheses: split after the last ")"
    fields = data[data.rfind(b")") + 2 :].split()
    return ProcStat(pid, fields[0].decode(), int(fields[2]), int(fields[19]))


def start_ticks(pid: int) -> int | None:
    stat = read_stat(pid)
    return None if stat is None else stat.start_ticks


def is_running(pid: int, ticks: int) -> bool:
    """Whether ``pid`` is still the process that started at ``ticks`` and has not exited."""
    stat = read_stat(pid)
    return stat is not None and not stat.exited and stat.start_ticks == ticks


def all_pids() -> list[int]:
    return [int(entry.name) for entry in PROC.iterdir() if entry.name.isdigit()]


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return []
    except PermissionError:
        pass  # someone else's group shares nothing with ours, but check /proc to be sure
    members = []
    for pid in all_pids():
        stat = read_stat(pid)
        if stat is not None and stat.pgid == pgid and not stat.exited:
            members.append(pid)
    return members


def read_environ(pid: int) -> dict[str, str] | None:
    try:
        return _parse_environ((PROC / str(pid) / "environ").read_bytes())
    except OSError:
        return None


def _parse_environ(data: bytes) -> dict[str, str]:
    env = {}
    for entry in data.split(b"\0"):
        key, sep, value = entry.partition(b"=")
        if sep:
            env[key.decode(errors="replace")] = value.decode(errors="replace")
    return env


def carries_tag(pid: int, state_dir: str, instance_id: str | None = None) -> bool:
    """Whether the process was started by the runtime of ``state_dir`` (for that instance)."""
    env = read_environ(pid)
    if env is None or env.get(STATE_DIR_VAR) != state_dir:
        return False
    return instance_id is None or env.get(INSTANCE_VAR) == instance_id


def scan_tagged(state_dir: str) -> list[TaggedProcess]:
    """Every live process on the machine that carries the tag of this state dir."""
    needle = f"\0{STATE_DIR_VAR}={state_dir}\0".encode()
    me = os.getpid()
    found = []
    for pid in all_pids():
        if pid == me:
            continue
        try:
            raw = (PROC / str(pid) / "environ").read_bytes()
        except OSError:
            continue
        if needle not in b"\0" + raw + b"\0":
            continue
        env = _parse_environ(raw)
        stat = read_stat(pid)
        instance_id = env.get(INSTANCE_VAR)
        if stat is None or stat.exited or not instance_id:
            continue
        found.append(TaggedProcess(pid, stat.pgid, stat.start_ticks, instance_id))
    return found


def started_at(ticks: int) -> float | None:
    """The wall-clock time a process started, from its start ticks and the boot time."""
    try:
        for line in (PROC / "stat").read_text().splitlines():
            if line.startswith("btime "):
                return int(line.split()[1]) + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return None
    return None
