"""Route tables as HAProxy sees them: names, integer weights and live transitions. Pure.

Why one backend per listener with every instance of every version in it, rather than one
backend per version chosen by ``rand()`` ACLs: a server weight is the one knob HAProxy's
runtime API turns atomically and without a reload (``set server <b>/<s> weight N``), and a
single backend lets ``option redispatch`` retry a failed request on *any* eligible
instance, including one of the other version, exactly like the built-in router's retry
order. Per-version backends would need a reload (or runtime map edits) to move the split,
and a retry could never leave the version that failed.

The price is integer weights (HAProxy accepts 0..256 per server): a version's share is the
sum of its servers' weights over the total, so shares are quantised. ``server_weights``
scales the largest per-instance share to 256, which keeps the error of any version's share
below ``n_servers / 512`` of the total (a 5 % canary with one instance against a stable
pool of one gets 13/256 = 5.08 %). Eligibility follows ``builtin.balancer.weight_plan`` so
both routers send traffic to the same versions: weight 0 gets nothing (its servers stay
listed at weight 0), a pool without backends is skipped, nothing eligible means 503.

``transition`` turns "what the worker has" and "what the table wants" into runtime
commands, ordered so that no moment in between has less capacity than either end: new
servers first, then raised weights, then lowered ones, and removals (``drain``) last.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from conveyor.core.model import Backend, Pool
from conveyor.traffic.builtin.balancer import weight_plan

MAX_WEIGHT = 256
"""The largest server weight HAProxy accepts."""

_UNSAFE = re.compile(r"[^A-Za-z0-9_.:-]")

ADDED = ("New server registered.",)
DELETED = ("Server deleted.",)
SILENT = ("",)
ADDRESS_CHANGED = ("IP changed", "no need to change", "port changed")


def safe_name(text: str) -> str:
    """``text`` as a legal HAProxy proxy or server name, still unique if it had to change.

    Names are kept readable in ``show stat`` and logs; a name that needed rewriting gets a
    short digest of the original so two different originals never collide.
    """
    cleaned = _UNSAFE.sub("-", text)
    if cleaned == text and text:
        return text
    return f"{cleaned}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def server_name(version: str, instance_id: str) -> str:
    return safe_name(f"{version}__{instance_id}")


@dataclass(frozen=True)
class ProxyNames:
    """The HAProxy names of one route: two frontends, two backends."""

    frontend: str
    backend: str
    preview_frontend: str
    preview_backend: str


def proxy_names(service: str, env: str) -> ProxyNames:
    base = f"{safe_name(service)}.{safe_name(env)}"
    return ProxyNames(f"fe.{base}", f"be.{base}", f"fe.{base}.preview", f"be.{base}.preview")


@dataclass(frozen=True)
class ServerSpec:
    """One ``server`` line of a backend: an instance of a version, at a weight."""

    name: str
    version: str
    instance_id: str
    host: str
    port: int
    weight: int

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def _spec(version: str, backend: Backend, weight: int) -> ServerSpec:
    name = server_name(version, backend.instance_id)
    return ServerSpec(name, version, backend.instance_id, backend.host, backend.port, weight)


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
    specs: list[ServerSpec] = []
    seen: set[str] = set()
    for index, pool in enumerate(pools):
        weight = max(1, min(MAX_WEIGHT, round(shares[index] * scale))) if index in eligible else 0
        for backend in pool.backends:
            spec = _spec(pool.version, backend, weight)
            if spec.name not in seen:  # the same instance listed twice: first listing wins
                seen.add(spec.name)
                specs.append(spec)
    return tuple(specs)


def preview_servers(version: str, backends: Iterable[Backend]) -> tuple[ServerSpec, ...]:
    """The preview listener's servers: one version, plain round-robin."""
    specs: dict[str, ServerSpec] = {}
    for backend in backends:
        spec = _spec(version, backend, 1)
        specs.setdefault(spec.name, spec)
    return tuple(specs.values())


def shares(specs: Iterable[ServerSpec]) -> dict[str, float]:
    """The fraction of requests each version gets from these servers (for tests and docs)."""
    totals: dict[str, int] = {}
    for spec in specs:
        totals[spec.version] = totals.get(spec.version, 0) + spec.weight
    grand = sum(totals.values())
    return {v: (w / grand if grand else 0.0) for v, w in totals.items()}


@dataclass(frozen=True)
class LiveServer:
    """What the router believes a worker has for one server name."""

    spec: ServerSpec
    draining: bool = False


@dataclass(frozen=True)
class Command:
    """One runtime API command and the outputs that mean it worked."""

    text: str
    accepts: tuple[str, ...] = SILENT


def succeeded(command: Command, output: str) -> bool:
    """Whether HAProxy's answer to ``command`` means it worked (errors are free text)."""
    answer = output.strip()
    return any(answer == ok if not ok else answer.startswith(ok) for ok in command.accepts)


def transition(
    backend: str, live: Mapping[str, LiveServer], desired: Sequence[ServerSpec]
) -> tuple[Command, ...]:
    """Runtime commands that take ``backend`` from ``live`` to ``desired`` without a reload.

    A server that is still draining and comes back (a rollback to a version whose instances
    are still warm) is made ready again rather than re-added, which keeps its counters and
    its idle connections. A removed server is only set to ``drain`` here: it keeps serving
    the requests it has, and the router deletes it once HAProxy reports it idle.
    """
    adds: list[Command] = []
    readies: list[Command] = []
    raises: list[Command] = []
    lowers: list[Command] = []
    drains: list[Command] = []
    wanted = {spec.name: spec for spec in desired}
    for name, spec in wanted.items():
        path = f"{backend}/{name}"
        current = live.get(name)
        if current is None:
            adds.append(Command(f"add server {path} {spec.address} weight {spec.weight}", ADDED))
            adds.append(Command(f"enable server {path}"))
            continue
        if current.spec.address != spec.address:
            readies.append(
                Command(f"set server {path} addr {spec.host} port {spec.port}", ADDRESS_CHANGED)
            )
        if current.draining:
            readies.append(Command(f"set server {path} state ready"))
        if current.spec.weight != spec.weight or current.draining:
            bucket = raises if spec.weight >= current.spec.weight else lowers
            bucket.append(Command(f"set server {path} weight {spec.weight}"))
    for name, current in live.items():
        if name not in wanted and not current.draining:
            drains.append(Command(f"set server {backend}/{name} state drain"))
    return (*adds, *readies, *raises, *lowers, *drains)


def drained(backend: str, name: str) -> tuple[Command, ...]:
    """Commands that retire an idle draining server: out of rotation for good, then gone."""
    path = f"{backend}/{name}"
    return (Command(f"set server {path} state maint"), Command(f"del server {path}", DELETED))
