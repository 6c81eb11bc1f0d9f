"""The project's conveyor.yaml as the server sees it: read when it changes, and when broken, said.

The server reads the file for what is about to happen (a new release's plan, a name check),
never for what already runs: a release carries its plan. So a broken file cannot hurt a
rollout in progress, but it must not go unnoticed either: ``status`` shows it, and the
ledger records each transition between a good and a broken file (``config.invalid`` with
the problems, ``config.valid`` when fixed), so "why was my deploy refused at 14:02" has an
answer. New deploys are refused while the file is broken; rollbacks are not (they reuse
the frozen plan of the release they return to).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conveyor.config.flags import FLAGS_DIR
from conveyor.config.loader import LoadedProject, load_project
from conveyor.errors import ConfigError, ConfigProblem, ConveyorError
from conveyor.store.records import NewEvent
from conveyor.store.repository import Store


@dataclass(frozen=True)
class ConfigState:
    """Whether the file could be read the last time it was looked at, and if not, why."""

    ok: bool
    file: str
    checked_at: float
    problems: tuple[ConfigProblem, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "file": self.file,
            "checked_at": self.checked_at,
            "problems": [p.to_dict() for p in self.problems],
        }


class ProjectSource:
    """Loads conveyor.yaml again only when it changed (size, mtime, inode), thread-safely."""

    def __init__(
        self, file: Path, store: Store, *, clock: Callable[[], float], actor: str = "conveyor"
    ) -> None:
        self.file = file
        self.store = store
        self.clock = clock
        self.actor = actor
        self._lock = threading.Lock()
        self._stamp: tuple[object, ...] | None = None
        self._loaded: LoadedProject | None = None
        self._error: ConfigError | None = None
        self._state = ConfigState(True, str(file), clock())

    def current(self) -> LoadedProject:
        """The project as the file says now; ``ConfigError`` if the file is broken."""
        with self._lock:
            self._refresh()
            if self._error is not None:
                raise self._error
            assert self._loaded is not None
            return self._loaded

    def last_good(self) -> LoadedProject | None:
        """The project as last read successfully (None if it never was)."""
        with self._lock:
            self._refresh()
            return self._loaded

    def state(self) -> ConfigState:
        with self._lock:
            self._refresh()
            return self._state

    def _refresh(self) -> None:
        try:
            stat = self.file.stat()
            stamp: tuple[object, ...] | None = (
                stat.st_size,
                stat.st_mtime_ns,
                stat.st_ino,
                *_flag_files_stamp(self.file.parent / FLAGS_DIR),
            )
        except OSError:
            stamp = None
        if stamp is not None and stamp == self._stamp:
            return
        self._stamp = stamp
        was_ok = self._state.ok
        try:
            self._loaded = load_project(self.file)
            self._error = None
        except ConfigError as error:
            self._error = error
        except ConveyorError as error:  # unreadable for another reason: still a config problem
            problem = ConfigProblem(str(self.file), None, "(file)", error.message, error.hint)
            self._error = ConfigError([problem])
        now = self.clock()
        if self._error is None:
            self._state = ConfigState(True, str(self.file), now)
            if not was_ok:
                self._record("config.valid", {"file": str(self.file)})
        else:
            self._state = ConfigState(False, str(self.file), now, tuple(self._error.problems))
            self._record(
                "config.invalid",
                {"file": str(self.file), "problems": [p.to_dict() for p in self._error.problems]},
            )

    def _record(self, kind: str, details: dict[str, Any]) -> None:
        self.store.append_events([NewEvent(kind, details)], actor=self.actor)


def _flag_files_stamp(folder: Path) -> tuple[object, ...]:
    """The flags/ directory's files as (name, size, mtime): an edit there is a config change."""
    try:
        found = sorted(folder.glob("*.y*ml"))[:500]
        return tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in found)
    except OSError:
        return ()
