"""The book a router saves next to HAProxy's configuration, so a successor can adopt it.

``conveyor server`` may die (a crash, a kill, a host reboot of the controller only) while
HAProxy keeps serving users. The next router finds the master through the pidfile; to carry
on with the *worker* as it is, without a reload (which in HAProxy 2.6 closes idle
keep-alive client connections and can race with a request being sent on one), it must know
what every server slot stands for. The router saves that after each change: the worker's
pid, the listeners, the slots, and each route's header rules and map entry (see
``headers``). A successor adopts the worker only if the pid is the
same and ``show stat`` agrees slot by slot (address and weight); otherwise it reloads.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from conveyor.traffic.haproxy.config import Listen
from conveyor.traffic.haproxy.headers import HeaderMatch
from conveyor.traffic.haproxy.plan import ServerSpec, Slot
from conveyor.traffic.haproxy.stats import StatRow


@dataclass(frozen=True)
class SavedRoute:
    service: str
    env: str
    listen: Listen
    preview: Listen | None
    headers: tuple[str, ...] = ()  # header names the worker's configuration routes by
    header: HeaderMatch | None = None  # the entry in the worker's header map


@dataclass(frozen=True)
class SavedBook:
    worker: int
    routes: tuple[SavedRoute, ...]
    slots: dict[str, dict[str, Slot]]  # backend -> slot name -> slot


def dump(book: SavedBook) -> str:
    def listen(value: Listen | None) -> list[object] | None:
        return None if value is None else [value.host, value.port]

    return json.dumps(
        {
            "worker": book.worker,
            "routes": [
                {
                    "service": r.service,
                    "env": r.env,
                    "listen": listen(r.listen),
                    "preview": listen(r.preview),
                    "headers": list(r.headers),
                    "header": None if r.header is None else [r.header.name, r.header.value],
                }
                for r in book.routes
            ],
            "slots": {
                backend: {
                    name: None
                    if slot.spec is None
                    else {**asdict(slot.spec), "draining": slot.draining}
                    for name, slot in by_name.items()
                }
                for backend, by_name in book.slots.items()
            },
        }
    )


def load(text: str) -> SavedBook:
    """The inverse of ``dump``; raises ``ValueError`` for anything that is not one."""
    try:
        data: dict[str, Any] = json.loads(text)
        routes = tuple(
            SavedRoute(
                str(entry["service"]),
                str(entry["env"]),
                Listen(str(entry["listen"][0]), int(entry["listen"][1])),
                Listen(str(entry["preview"][0]), int(entry["preview"][1]))
                if entry["preview"]
                else None,
                tuple(str(name) for name in entry.get("headers", ())),
                _match(entry.get("header")),
            )
            for entry in data["routes"]
        )
        return SavedBook(int(data["worker"]), routes, _slots(data["slots"]))
    except (KeyError, TypeError, IndexError, AttributeError) as exc:
        raise ValueError(f"not a saved router book: {exc!r}") from exc


def _match(data: Any) -> HeaderMatch | None:
    return None if data is None else HeaderMatch(str(data[0]), str(data[1]))


def _slots(data: Mapping[str, Any]) -> dict[str, dict[str, Slot]]:
    slots: dict[str, dict[str, Slot]] = {}
    for backend, by_name in data.items():
        slots[backend] = {}
        for name, entry in by_name.items():
            if entry is None:
                slots[backend][name] = Slot(name)
                continue
            spec = ServerSpec(
                str(entry["version"]),
                str(entry["instance_id"]),
                str(entry["host"]),
                int(entry["port"]),
                int(entry["weight"]),
            )
            slots[backend][name] = Slot(name, spec, bool(entry["draining"]))
    return slots


def matches(slots: Mapping[str, Mapping[str, Slot]], rows: Iterable[StatRow]) -> bool:
    """Whether a worker's ``show stat`` rows are what ``slots`` says (address, weight)."""
    seen = {(row.proxy, row.server): row for row in rows}
    for backend, by_name in slots.items():
        for name, slot in by_name.items():
            row = seen.get((backend, name))
            if row is None:
                return False
            spec = slot.spec
            if spec is None or slot.draining:
                continue
            if row.addr != f"{spec.host}:{spec.port}" or row.weight != spec.weight:
                return False
    return True


def serving(slots: Mapping[str, Mapping[str, Slot]]) -> dict[str, tuple[ServerSpec, ...]]:
    """Per backend, the servers taking traffic: an adopted route's state until its table."""
    return {
        backend: tuple(s.spec for s in by_name.values() if s.spec and not s.draining)
        for backend, by_name in slots.items()
    }
