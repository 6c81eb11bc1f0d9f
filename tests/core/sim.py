"""A tiny pure world for driving ``rollout.decide`` tick by tick, one second per tick.

It stands in for the runtime, the router and the controller loop so that whole rollouts
(with faults and controller crashes) can be checked as properties rather than step by step:

* ``StartInstances`` creates instances of a version; how they behave is the version's
  ``Fault``: ready after a few ticks, never ready, crash-looping, serving errors.
* ``StopInstances`` removes them at once; ``SetWeights`` sets the router's weights.
* ``CheckPreview`` answers on the next tick's observations, as the real controller does. It
  is a GET of the readiness path through the preview listener, the path an instance must
  pass to be ready at all, so it fails only when the listener has no ready backend: an
  "erroring" version (5xx for users, ready on its readiness path) passes it and is caught
  by the error rate after the switch.
* ``abort_at`` ticks run ``manual_abort`` (``conveyor rollback``) instead of ``decide``.
* The router sends ``REQUESTS_PER_TICK`` requests per tick, split by weight among pools with
  backends; the new version's cumulative counters feed ``core.traffic.window``.
* A *controller crash* at tick t applies that tick's action to the world but loses the status
  it returned (the previous one is kept): SIGKILL between acting and committing.
* After every tick the router is re-synced from the *stored* weights, as the controller does
  after each commit and on restart (``rollout.py``: "sees the switch replayed from the stored
  weights"). So a ``SetWeights`` whose commit was lost is undone until it is decided again.
* A release is created with the weights users are on (the previous release's), as
  ``controller.releases`` does, and tables are built as ``controller.driver`` builds them
  (with the preview version of a blue-green release until it has succeeded).

Canary rollouts add three things, each carried out as the real controller does:

* ``RunAnalysis`` starts the run of that key (once; a second start of a live key is a no-op).
  Its phase, observed as ``obs.analysis[key]``, follows the scripted ``Analysis`` for the key:
  ``running`` for ``after`` ticks, then the scripted outcome for good. A key without a script
  succeeds after ``DEFAULT_ANALYSIS_TICKS``.
* The route table carries the stored header route while the rollout is in progress (as
  ``controller.driver._sync_routes`` builds it); ``HEADER_REQUESTS_PER_TICK`` more requests
  carry the header each tick and count for the canary when they reach it.
* Humans act through the store, between ticks, the way ``controller.driver.control`` does:
  ``promote_at`` (tick -> full?), ``pause_at``/``resume_at``, and an operator who, once a
  rollout has been held for a pause step or an inconclusive run for ``patience`` ticks,
  promotes it or rolls it back (``on_hold``), or never comes (``"wait"``). These commits are
  separate from the controller's, so a controller crash does not lose them.

The stable version is always healthy: it is what a rollback returns to.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from conveyor.core import canary, rollout
from conveyor.core.model import (
    HeaderRoute,
    InstanceObservation,
    InstanceState,
    RouteTable,
    VersionCounters,
)
from conveyor.core.rollout import decide, manual_abort
from conveyor.core.state import (
    Action,
    AnalysisState,
    CheckPreview,
    Event,
    Observations,
    Phase,
    PreviewCheck,
    RolloutSpec,
    RolloutStatus,
    RunAnalysis,
    SetWeights,
    StartInstances,
    Step,
    StopInstances,
    StrategyKind,
    StrategySpec,
    Triggers,
    Wait,
)
from conveyor.core.traffic import route_table, window

Fault = Literal["healthy", "slow-start", "never-ready", "crashy", "erroring"]
FAULTS: tuple[Fault, ...] = ("healthy", "slow-start", "never-ready", "crashy", "erroring")
BROKEN: tuple[Fault, ...] = ("never-ready", "crashy", "erroring")

NEW = "tnewversion"
STABLE = "tstableversn"
START = 10_000.0

READY_AFTER: dict[Fault, int | None] = {
    "healthy": 2,
    "erroring": 2,
    "slow-start": 9,
    "never-ready": None,
    "crashy": None,
}
CRASH_EVERY = 3  # a crashy instance exits and is restarted every this many ticks
STABLE_READY_AFTER = 2
REQUESTS_PER_TICK = 20

# Deadlines are in ticks (seconds). The deadline leaves room for a slow-start instance plus
# the few ticks of bookkeeping around it; crashy and erroring versions trip their own
# trigger long before it.
PROGRESS_DEADLINE = 20.0
TRIGGERS = Triggers(error_rate=0.05, min_requests=20, window=10.0, max_restarts=2, verification=5.0)

HEADER_REQUESTS_PER_TICK = 4  # requests carrying the canary header, on top of the weighted ones
DEFAULT_ANALYSIS_TICKS = 2

Outcome = Literal["successful", "failed", "inconclusive", "error", "running"]
OnHold = Literal["wait", "promote", "abort"]


@dataclass(frozen=True)
class Analysis:
    """How a scripted analysis run goes: ``running`` for ``after`` ticks, then ``outcome``.

    ``"running"`` as the outcome is a run that never ends (a provider that never answers).
    """

    outcome: Outcome = "successful"
    after: int = DEFAULT_ANALYSIS_TICKS

    def state(self, age: int) -> AnalysisState:
        if age < self.after or self.outcome == "running":
            return AnalysisState("running", f"{age} measurement(s) taken")
        message = {
            "successful": "all measurements passed",
            "failed": "error rate 31% > 5% in 3 of 3 measurements",
            "inconclusive": "latency p99 between the success and failure limits",
            "error": "metrics provider unreachable: connection refused",
        }[self.outcome]
        return AnalysisState(self.outcome, message, {"measurements": age, "script": self.outcome})


def make_spec(
    kind: StrategyKind,
    *,
    desired: int,
    stable_desired: int,
    max_surge: int = 1,
    max_unavailable: int = 0,
    scale_down_delay: float = 5.0,
    preview_check: bool = True,
    first: bool = False,
    steps: tuple[Step, ...] = (),
    background: str | None = None,
    progress_deadline: float = PROGRESS_DEADLINE,
) -> RolloutSpec:
    strategy = StrategySpec(
        kind,
        max_surge,
        max_unavailable,
        scale_down_delay,
        steps=steps,
        background_analysis=background,
    )
    return RolloutSpec(
        release_id=1,
        revision=2,
        version=NEW,
        desired=desired,
        strategy=strategy,
        progress_deadline=progress_deadline,
        triggers=TRIGGERS,
        stable_version=None if first else STABLE,
        stable_revision=None if first else 1,
        stable_desired=0 if first else stable_desired,
        preview_check=preview_check,
    )


@dataclass
class SimInstance:
    instance_id: str
    version: str
    fault: Fault
    started_at: float
    age: int = 0
    restarts: int = 0
    ready: bool = False
    state: InstanceState = "starting"

    def tick(self) -> None:
        self.age += 1
        if self.fault == "crashy":
            if self.age % CRASH_EVERY == 0:
                self.restarts += 1
                self.state = "backoff"
            else:
                self.state = "running"
            return
        self.state = "running"
        ready_after = READY_AFTER[self.fault] if self.version == NEW else STABLE_READY_AFTER
        self.ready = ready_after is not None and self.age >= ready_after

    def observe(self) -> InstanceObservation:
        return InstanceObservation(
            instance_id=self.instance_id,
            service="web",
            env="prod",
            version=self.version,
            revision=2 if self.version == NEW else 1,
            host="127.0.0.1",
            port=20_000 + int(self.instance_id.rsplit("-", 1)[1]),
            pid=None if self.state == "backoff" else 1,
            state=self.state,
            ready=self.ready,
            restarts=self.restarts,
            started_at=self.started_at,
            ever_ready=self.ready,
        )


@dataclass
class World:
    spec: RolloutSpec
    fault: Fault
    now: float = START
    instances: dict[str, SimInstance] = field(default_factory=dict)
    weights: dict[str, int] = field(default_factory=dict)
    requests: int = 0
    errors: int = 0
    samples: list[tuple[float, VersionCounters]] = field(default_factory=list)
    preview_version: str | None = None
    preview_next: PreviewCheck | None = None
    preview_seen: PreviewCheck | None = None
    header_route: HeaderRoute | None = None
    scripts: Mapping[str, Analysis] = field(default_factory=dict)
    runs: dict[str, int] = field(default_factory=dict)  # analysis run key -> age in ticks
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def __post_init__(self) -> None:
        if self.spec.stable_version is not None:
            for _ in range(self.spec.stable_desired):
                inst = self._create(self.spec.stable_version)
                inst.age, inst.ready, inst.state = STABLE_READY_AFTER, True, "running"
            self.weights = {self.spec.stable_version: 100}

    def _create(self, version: str) -> SimInstance:
        fault: Fault = self.fault if version == NEW else "healthy"
        inst = SimInstance(f"{version}-{next(self._ids):04d}", version, fault, self.now)
        self.instances[inst.instance_id] = inst
        return inst

    def observations(self) -> tuple[InstanceObservation, ...]:
        return tuple(i.observe() for i in self.instances.values())

    def observe(self) -> Observations:
        seen = self.observations()
        samples = self.samples
        return Observations(
            new=tuple(i for i in seen if i.version == self.spec.version),
            old=tuple(i for i in seen if i.version == self.spec.stable_version),
            others=tuple(
                i for i in seen if i.version not in (self.spec.version, self.spec.stable_version)
            ),
            traffic=window(samples, self.now, self.spec.triggers.window) if samples else None,
            preview=self.preview_seen,
            analysis={key: self.script(key).state(age) for key, age in self.runs.items()},
        )

    def script(self, key: str) -> Analysis:
        return self.scripts.get(key, Analysis())

    def apply(self, action: Action) -> None:
        if isinstance(action, StartInstances):
            for _ in range(action.count):
                self._create(action.version)
        elif isinstance(action, StopInstances):
            for instance_id in action.instance_ids:
                self.instances.pop(instance_id, None)
        elif isinstance(action, SetWeights):
            self.weights = dict(action.weights)
        elif isinstance(action, CheckPreview):
            if self.table().preview:
                self.preview_next = PreviewCheck(True, "200 OK")
            else:
                self.preview_next = PreviewCheck(False, "503 Service Unavailable")
        elif isinstance(action, RunAnalysis):
            self.runs.setdefault(action.key, 0)
        else:
            assert isinstance(action, Wait), action

    def table(self) -> RouteTable:
        return route_table(
            self.weights,
            self.observations(),
            preview_version=self.preview_version,
            header_route=self.header_route,
        )

    def advance(self) -> None:
        """One second passes: users send requests, instances age, crash, become ready."""
        table = self.table()
        sent = int(REQUESTS_PER_TICK * share(table, NEW))
        if header_reaches(table, NEW):
            sent += HEADER_REQUESTS_PER_TICK
        self.requests += sent
        if self.fault == "erroring":
            self.errors += sent
        self.now += 1.0
        for inst in self.instances.values():
            inst.tick()
        self.samples.append(
            (self.now, VersionCounters(requests=self.requests, responses_5xx=self.errors))
        )
        self.preview_seen, self.preview_next = self.preview_next, None
        for key in self.runs:
            self.runs[key] += 1


@dataclass(frozen=True)
class Tick:
    """One tick as users and operators would have seen it."""

    index: int
    now: float
    action: Action
    decided: RolloutStatus  # what decide returned
    status: RolloutStatus  # what is stored after this tick (the previous one if it was lost)
    lost: bool
    instances: tuple[InstanceObservation, ...]  # right after the action
    table: RouteTable  # from the stored weights, right after the action
    table_later: RouteTable  # the same weights over the instances one second later
    human: str = ""  # what a human did through the store before this tick was decided
    given: RolloutStatus | None = None  # the status decide was given (after the human's change)
    events: tuple[Event, ...] = ()  # the events decide returned (lost with the status if lost)


@dataclass(frozen=True)
class Run:
    spec: RolloutSpec
    fault: Fault
    ticks: tuple[Tick, ...]
    world: World

    @property
    def status(self) -> RolloutStatus:
        return self.ticks[-1].status

    def final_versions(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for inst in self.world.instances.values():
            counts[inst.version] = counts.get(inst.version, 0) + 1
        return counts


def simulate(
    spec: RolloutSpec,
    fault: Fault,
    *,
    crashes: Iterable[int] = (),
    abort_at: Iterable[int] = (),
    max_ticks: int = 400,
    analysis: Mapping[str, Analysis] | None = None,
    promote_at: Mapping[int, bool] | None = None,
    pause_at: Iterable[int] = (),
    resume_at: Iterable[int] = (),
    on_hold: OnHold = "wait",
    patience: int = 5,
) -> Run:
    """Run ``decide`` until the status is done (or ``max_ticks`` pass) and record every tick."""
    world = World(spec, fault, scripts=dict(analysis or {}))
    lost_at, aborts = frozenset(crashes), frozenset(abort_at)
    promotes, pauses, resumes = dict(promote_at or {}), frozenset(pause_at), frozenset(resume_at)
    status = RolloutStatus(weights=dict(world.weights))
    ticks: list[Tick] = []
    held = 0
    for index in range(max_ticks):
        human = ""
        held = held + 1 if status.phase is Phase.PROGRESSING and is_held(status) else 0
        if status.phase.in_progress:
            if index in pauses:
                status, human = canary.pause(status, "bob"), "pause"
            if index in resumes:
                status, human = canary.resume(status), "resume"
            if index in promotes or (on_hold == "promote" and held > patience):
                full = promotes.get(index, False)
                status, human = (
                    canary.promote(status, full=full),
                    "promote --full" if full else "promote",
                )
                held = 0
        given = status
        aborting = index in aborts or (on_hold == "abort" and held > patience)
        # As `controller.driver.abort`: a rollback already under way is left to finish.
        if aborting and status.phase.in_progress and status.phase is not Phase.ROLLING_BACK:
            human = "abort"
            decision = manual_abort(spec, status, world.observe(), "alice", world.now)
        else:
            decision = decide(spec, status, world.observe(), world.now)
        world.apply(decision.action)
        lost = index in lost_at
        if not lost:
            status = decision.status
        world.weights = dict(status.weights)
        world.preview_version = preview_version(spec, status)
        world.header_route = header_route(spec, status)
        now = world.now
        instances = world.observations()
        table = world.table()
        world.advance()
        later = world.table()
        ticks.append(
            Tick(
                index,
                now,
                decision.action,
                decision.status,
                status,
                lost,
                instances,
                table,
                later,
                human,
                given,
                decision.events,
            )
        )
        if status.done:
            break
    return Run(spec, fault, tuple(ticks), world)


def preview_version(spec: RolloutSpec, status: RolloutStatus) -> str | None:
    """The version served on the preview listener, as the controller chooses it."""
    return rollout.preview_version(spec, status)


def header_route(spec: RolloutSpec, status: RolloutStatus) -> HeaderRoute | None:
    """The header route as ``controller.driver._sync_routes`` installs it."""
    if status.header_route is None or not status.phase.in_progress:
        return None
    return HeaderRoute(status.header_route[0], status.header_route[1], spec.version)


def is_held(status: RolloutStatus) -> bool:
    """Held for a human by the rollout itself (a pause step, an inconclusive run), not by one."""
    return status.paused is not None and not status.paused.startswith(canary.MANUAL_PAUSE)


def header_reaches(table: RouteTable, version: str) -> bool:
    """True when requests carrying the table's header are sent to ``version``."""
    route = table.header_route
    if route is None or route.version != version:
        return False
    return any(p.version == version and p.backends for p in table.pools)


def serves(table: RouteTable) -> bool:
    """True when a new request has somewhere to go: a weighted pool with a backend."""
    return any(pool.weight > 0 and pool.backends for pool in table.pools)


def share(table: RouteTable, version: str) -> float:
    """The fraction of new requests the router sends to ``version``."""
    eligible = {p.version: p.weight for p in table.pools if p.weight > 0 and p.backends}
    total = sum(eligible.values())
    return eligible.get(version, 0) / total if total else 0.0
