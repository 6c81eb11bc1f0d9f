"""Route tables as HAProxy sees them: weights, server slots and live transitions. Pure.

**One backend per listener, every instance of every version in it.** A server weight is the
knob HAProxy's runtime API turns atomically and without a reload (``set server <b>/<s>
weight N``), and a single backend lets ``option redispatch`` retry a failed request on any
eligible instance, including one of another version, like the built-in router's retries.
One backend per version chosen by ``rand()`` ACLs would need a reload (or map edits) to
move the split, and a retry could never leave the version that failed.

The price is integer weights (0..256 per server): a version's share is the sum of its
servers' weights over the total. ``server_weights`` scales the largest per-instance share
to 256, which keeps every version's share within ``n_servers / 512`` of the ideal (a 5 %
canary with one instance against one stable instance gets 13/256 = 5.08 %). Eligibility
follows ``builtin.balancer.weight_plan`` so both routers send traffic to the same versions:
weight 0 gets nothing (its servers stay, at weight 0), a pool without backends is skipped,
nothing eligible means every weight is 0 and HAProxy answers 503.

**Servers are slots.** Each backend is rendered with spare ``server`` lines (``s1``, ``s2``,
...) parked in maintenance. An instance that joins takes a free slot (``set server ...
addr``, ``weight``, ``state ready``); one that leaves is drained and, once idle, parked
again. HAProxy 2.6's runtime ``add server`` alone would avoid the spares, but a server
created that way never reuses idle connections: measured here, every request then opens a
new TCP connection to the instance (36 µs of HAProxy CPU per request instead of 14, a third
of the throughput, and a TIME_WAIT socket per request). So ``add server`` is only the
overflow when the spares run out; the next reload turns such servers into ordinary ones.
A reload is not used for that: in HAProxy 2.6 the replaced worker closes idle keep-alive
client connections at once, which races with a client sending its next request on one.

``transition`` turns a backend's slots and the wanted servers into runtime commands,
ordered so no moment in between has less capacity than either end: new servers first,
then raised weights, lowered ones, and drains last.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from conveyor.core.model import Backend, Pool
from conveyor.traffic.builtin.balancer import weight_plan

MAX_WEIGHT = 256
"""The largest server weight HAProxy accepts."""

MIN_SLOTS = 16
PARKED_ADDRESS = ("127.0.0.1", 1)  # where a free slot points; it is in maintenance anyway

_UNSAFE = re.compile(r"[^A-Za-z0-9_.:-]")

SILENT = ("",)
ADDED = ("New server registered.",)
ADDRESS_CHANGED = ("IP changed", "no need to change", "port changed")


def safe_name(text: str) -> str:
    """``text`` as a legal HAProxy proxy name, still unique if it had to change."""
    cleaned = _UNSAFE.sub("-", text)
    if cleaned == text and text:
        return text
    return f"{cleaned}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


@dataclass(frozen=True)
class ProxyNames:
    """The HAProxy names of one route: two frontends, three backends (see ``headers``)."""

    frontend: str
    backend: str
    preview_frontend: str
    preview_backend: str
    header_backend: str


def proxy_names(service: str, env: str) -> ProxyNames:
    base = f"{safe_name(service)}.{safe_name(env)}"
    return ProxyNames(
        f"fe.{base}", f"be.{base}", f"fe.{base}.preview", f"be.{base}.preview", f"be.{base}.header"
    )


@dataclass(frozen=True)
class ServerSpec:
    """An instance of a version at an address, and the weight it should have."""

    version: str
    instance_id: str
    host: str
    port: int
    weight: int

    @property
    def identity(self) -> tuple[str, str, str, int]:
        """What makes two specs the same server (the weight may differ)."""
        return (self.version, self.instance_id, self.host, self.port)


def _spec(version: str, backend: Backend, weight: int) -> ServerSpec:
    return ServerSpec(version, backend.instance_id, backend.host, backend.port, weight)


def server_weights(pools: Sequence[Pool]) -> tuple[ServerSpec, ...]:
    """Every backend of every pool as a server, weighted so versions get their share.

    Eligible pools (see the module docstring) split ``MAX_WEIGHT`` per instance in
    proportion to ``pool.weight / len(pool.backends)``; an eligible instance never drops to
    0 by rounding (it would silently switch a small canary off). Weight-0 pools keep their
    servers at weight 0, so a later step that raises them needs no new server.
    """
    plan = weight_plan(pools)
    eligible = set(plan.indices)
    shares = {i: pools[i].weight / len(pools[i].backends) for i in eligible}
    scale = MAX_WEIGHT / max(shares.values()) if shares else 0.0
    specs: dict[tuple[str, str, str, int], ServerSpec] = {}
    for index, pool in enumerate(pools):
        weight = max(1, min(MAX_WEIGHT, round(shares[index] * scale))) if index in eligible else 0
        for backend in pool.backends:
            spec = _spec(pool.version, backend, weight)
            specs.setdefault(spec.identity, spec)  # listed twice: the first listing wins
    return tuple(specs.values())


def preview_servers(version: str, backends: Iterable[Backend]) -> tuple[ServerSpec, ...]:
    """The preview listener's servers: one version, plain round-robin."""
    specs: dict[tuple[str, str, str, int], ServerSpec] = {}
    for backend in backends:
        spec = _spec(version, backend, 1)
        specs.setdefault(spec.identity, spec)
    return tuple(specs.values())


def shares(specs: Iterable[ServerSpec]) -> dict[str, float]:
    """The fraction of requests each version gets from these servers."""
    totals: dict[str, int] = {}
    for spec in specs:
        totals[spec.version] = totals.get(spec.version, 0) + spec.weight
    grand = sum(totals.values())
    return {v: (w / grand if grand else 0.0) for v, w in totals.items()}


# -- slots -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Slot:
    """One ``server`` line of a backend and the instance it stands for, if any."""

    name: str
    spec: ServerSpec | None = None
    draining: bool = False

    @property
    def free(self) -> bool:
        return self.spec is None


Slots = Mapping[str, Slot]


def slot_name(number: int) -> str:
    return f"s{number}"


def slot_count(servers: int) -> int:
    """Slots to render for ``servers`` instances: room for two more full sets, at least 16.

    A blue-green switch or a canary brings a whole new set of instances while the old set
    still drains, and a surge adds a few more; three times the current count keeps the
    ``add server`` overflow (no connection reuse) for unusual cases.
    """
    return max(MIN_SLOTS, 3 * servers)


def layout(desired: Sequence[ServerSpec], previous: Slots | None = None) -> dict[str, Slot]:
    """The slots of a freshly (re)started worker: ``desired`` in place, the rest free.

    A server keeps the slot it had, so ``show stat`` reads the same across a reload;
    draining servers are not carried over (the old worker finishes their requests).
    """
    previous = previous or {}
    wanted = {spec.identity: spec for spec in desired}
    slots: dict[str, Slot] = {}
    placed: set[tuple[str, str, str, int]] = set()
    for name, slot in previous.items():
        spec = slot.spec
        if spec is not None and not slot.draining and spec.identity in wanted:
            slots[name] = Slot(name, wanted[spec.identity])
            placed.add(spec.identity)
        else:
            slots[name] = Slot(name)
    pending = [spec for spec in desired if spec.identity not in placed]
    count = max(len(slots), slot_count(len(wanted)))
    number = 0
    while len(slots) < count or pending:
        number += 1
        name = slot_name(number)
        if name in slots and not slots[name].free:
            continue
        slots[name] = Slot(name, pending.pop(0)) if pending else Slot(name)
    return dict(sorted(slots.items(), key=lambda item: int(item[0][1:])))


@dataclass(frozen=True)
class Command:
    """One runtime API command and the answers that mean it worked."""

    text: str
    accepts: tuple[str, ...] = SILENT


def succeeded(command: Command, output: str) -> bool:
    """Whether HAProxy's answer to ``command`` means it worked (errors are free text)."""
    answer = output.strip()
    return any(answer == ok if not ok else answer.startswith(ok) for ok in command.accepts)


@dataclass(frozen=True)
class Transition:
    """Commands for one backend, and its slots once they have all succeeded."""

    commands: tuple[Command, ...]
    slots: dict[str, Slot]


def transition(backend: str, slots: Slots, desired: Sequence[ServerSpec]) -> Transition:
    """Runtime commands that take ``backend`` from ``slots`` to ``desired``.

    A joining instance takes the first free slot, or a new one made with ``add server`` when
    none is free. A draining server that comes back (a rollback to still-warm instances) is
    made ready again in its slot, keeping its idle connections.
    """
    by_identity = {s.spec.identity: s for s in slots.values() if s.spec is not None}
    free = [s.name for s in slots.values() if s.free]
    numbers = [int(name[1:]) for name in slots if name[1:].isdigit()]
    next_number = max(numbers, default=0) + 1
    assigns: list[Command] = []
    raises: list[Command] = []
    lowers: list[Command] = []
    drains: list[Command] = []
    after = dict(slots)
    kept: set[str] = set()
    for spec in desired:
        current = by_identity.get(spec.identity)
        if current is None:
            if free:
                name = free.pop(0)
                path = f"{backend}/{name}"
                assigns += [
                    Command(
                        f"set server {path} addr {spec.host} port {spec.port}", ADDRESS_CHANGED
                    ),
                    Command(f"set server {path} weight {spec.weight}"),
                    Command(f"set server {path} state ready"),
                ]
            else:
                name, next_number = slot_name(next_number), next_number + 1
                path = f"{backend}/{name}"
                assigns += [
                    Command(
                        f"add server {path} {spec.host}:{spec.port} weight {spec.weight}", ADDED
                    ),
                    Command(f"enable server {path}"),
                ]
            after[name] = Slot(name, spec)
            kept.add(name)
            continue
        path = f"{backend}/{current.name}"
        old = current.spec
        assert old is not None
        if current.draining:
            assigns.append(Command(f"set server {path} state ready"))
        if old.weight != spec.weight or current.draining:
            bucket = raises if spec.weight >= old.weight else lowers
            bucket.append(Command(f"set server {path} weight {spec.weight}"))
        after[current.name] = Slot(current.name, spec)
        kept.add(current.name)
    for name, slot in slots.items():
        if slot.spec is not None and name not in kept and not slot.draining:
            drains.append(Command(f"set server {backend}/{name} state drain"))
            after[name] = replace(slot, draining=True)
    return Transition((*assigns, *raises, *lowers, *drains), after)


def park(backend: str, name: str) -> Command:
    """The command that frees an idle drained slot: maintenance, until it is reused."""
    return Command(f"set server {backend}/{name} state maint")
