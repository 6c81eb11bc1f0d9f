"""What the router knows of each HAProxy worker: its slots, and counters that outlive it.

HAProxy's counters live in a worker and die with it, and a slot's counters mix every
instance the slot ever stood for. Conveyor promises counters per version, cumulative for
the router's lifetime. ``WorkerBook`` bridges the two for one worker:

* ``slots`` is what each ``server`` line stands for in *this* worker. The current worker's
  book is updated as commands succeed; a worker replaced by a reload keeps the book it had,
  frozen, so its late answers and log lines are still attributed to the right versions;
* when a drained slot is parked, the difference between its counters now and when it was
  last parked (``baselines``) is banked under the version it served (``banked``);
* ``view`` is the worker's latest per-route, per-version tally (``stats.worker_view``); the
  router sums the views of the live workers and the last views of the exited ones.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from conveyor.traffic.haproxy.plan import ServerSpec, Slot
from conveyor.traffic.haproxy.stats import (
    ZERO,
    StatRow,
    Tally,
    Views,
    add_into,
    parse_stat,
    worker_view,
)


@dataclass
class WorkerBook:
    pid: int
    slots: dict[str, dict[str, Slot]]  # backend -> slot name -> slot
    baselines: dict[tuple[str, str], Tally] = field(default_factory=dict)
    banked: dict[str, dict[str, Tally]] = field(default_factory=dict)  # backend -> version
    rows: tuple[StatRow, ...] = ()
    view: Views = field(default_factory=dict)

    def refresh(self, answer: str, backends: Mapping[str, str], no_version: str) -> bool:
        """Take a ``show stat`` answer; ``False`` (and the last view kept) if it is not one."""
        if not answer.startswith("# pxname"):
            return False
        self.rows = parse_stat(answer)
        self.view = worker_view(
            self.rows, backends, self.slots, self.baselines, self.banked, no_version
        )
        return True

    def spec_of(self, backend: str, server: str) -> ServerSpec | None:
        slot = self.slots.get(backend, {}).get(server)
        return None if slot is None else slot.spec

    def busy(self) -> Iterator[tuple[str, ServerSpec, int]]:
        """``(backend, spec, sessions)`` for every slot standing for an instance."""
        for row in self.rows:
            spec = None if row.is_backend else self.spec_of(row.proxy, row.server)
            if spec is not None:
                yield row.proxy, spec, row.scur

    def idle_draining(self) -> Iterator[tuple[str, str, StatRow]]:
        """Draining slots that HAProxy reports without a session: ready to be parked."""
        rows = {(row.proxy, row.server): row for row in self.rows}
        for backend, slots in self.slots.items():
            for name, slot in slots.items():
                row = rows.get((backend, name))
                if slot.draining and row is not None and row.scur == 0:
                    yield backend, name, row

    def parked(self, backend: str, name: str, row: StatRow) -> None:
        """Bank what the slot's instance did and free the slot (it is in maintenance now)."""
        slot = self.slots[backend][name]
        if slot.spec is not None:
            since = row.tally - self.baselines.get((backend, name), ZERO)
            add_into(self.banked.setdefault(backend, {}), slot.spec.version, since)
        self.baselines[(backend, name)] = row.tally
        self.slots[backend][name] = Slot(name)
