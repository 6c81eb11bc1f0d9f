"""Which names ``gate:`` accepts, known without importing a single gate.

Validating conveyor.yaml must not import the pipeline package (it sits above config) nor any
gate plugin (importing one may be slow or fail, and is the business of the job that runs it).
So the names live here, in three sources that the pipeline's gate registry
(``conveyor.pipeline.gates.registry``) reads too, so the two can never disagree:

- ``BUILTIN_GATE_NAMES``: the gates Conveyor ships; the registry maps each to its code and a
  test checks that both list the same names;
- names registered from code (``register_gate`` in the registry records them here);
- the ``conveyor.gates`` entry points, *listed* through ``importlib.metadata`` (reading
  installed distributions' metadata, importing nothing) once per process, until
  ``forget_entry_points``.

``LOCK`` guards this state and the registry's, since gates run in threads.
"""

from __future__ import annotations

import threading
from importlib.metadata import EntryPoint, entry_points

GATE_GROUP = "conveyor.gates"
"""The entry point group gate plugins are declared in."""

BUILTIN_GATE_NAMES: tuple[str, ...] = ("audit", "migration-safety", "secret-scan")
"""The gates Conveyor ships, sorted."""

LOCK = threading.RLock()
_registered: set[str] = set()
_listed: dict[str, dict[str, EntryPoint]] = {}


def gate_names() -> tuple[str, ...]:
    """Every name a ``gate:`` field accepts now, sorted."""
    with LOCK:
        return tuple(sorted({*BUILTIN_GATE_NAMES, *_registered, *listed_entry_points(GATE_GROUP)}))


def is_gate_name(name: str) -> bool:
    """Whether ``gate: NAME`` is valid; entry points are listed only for a name not built in."""
    with LOCK:
        return (
            name in BUILTIN_GATE_NAMES
            or name in _registered
            or name in listed_entry_points(GATE_GROUP)
        )


def record_gate_name(name: str) -> None:
    """Make ``name`` valid (the registry calls this when a gate is registered from code)."""
    with LOCK:
        _registered.add(name)


def drop_gate_name(name: str) -> None:
    with LOCK:
        _registered.discard(name)


def is_recorded(name: str) -> bool:
    """Whether ``name`` was registered from code (built-ins and entry points are not)."""
    with LOCK:
        return name in _registered


def listed_entry_points(group: str) -> dict[str, EntryPoint]:
    """A group's entry points by name, listed once and cached; nothing is imported.

    Two distributions declaring one name: the first in (name, value) order wins, so the
    choice does not depend on the order ``sys.path`` happens to list them in.
    """
    with LOCK:
        if group not in _listed:
            found: dict[str, EntryPoint] = {}
            for point in sorted(entry_points(group=group), key=lambda p: (p.name, p.value)):
                found.setdefault(point.name, point)
            _listed[group] = found
        return _listed[group]


def forget_entry_points() -> None:
    """List entry points afresh on next use, e.g. after installing a plugin (and in tests)."""
    with LOCK:
        _listed.clear()
