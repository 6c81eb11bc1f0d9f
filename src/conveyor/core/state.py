"""The data the rollout state machine reads and writes.

``RolloutSpec`` is fixed when a release is created; ``RolloutStatus`` is everything the
controller must remember between ticks and is stored (as JSON) with the release after every
action, so a restarted controller resumes from it. ``Observations`` is what the shell saw this
tick. ``Decision`` is what ``core.rollout.decide`` returns: at most one action to perform, the
status to store once it succeeded, and the ledger events to append with it.

Everything that can be computed from observations (ready counts, who is stable) is computed,
not stored: the status holds only what cannot be seen again after a crash (when progress was
last made, when traffic switched, why a rollback started).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from conveyor.core.approval import ApprovalState
from conveyor.core.model import InstanceObservation


class Phase(StrEnum):
    PENDING_APPROVAL = "pending_approval"  # waiting for people (``core.approval``)
    PENDING = "pending"
    PROGRESSING = "progressing"
    VERIFYING = "verifying"
    SUCCEEDED = "succeeded"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"
    REJECTED = "rejected"  # an approver said no
    CANCELLED = "cancelled"  # never started: expired unapproved, or replaced by a newer deploy

    @property
    def terminal(self) -> bool:
        return self in (
            Phase.SUCCEEDED,
            Phase.ROLLED_BACK,
            Phase.FAILED,
            Phase.REJECTED,
            Phase.CANCELLED,
        )

    @property
    def in_progress(self) -> bool:
        return self in (Phase.PENDING, Phase.PROGRESSING, Phase.VERIFYING, Phase.ROLLING_BACK)


StrategyKind = Literal["recreate", "rolling", "blue_green", "canary"]


# --- canary steps: data, stored as JSON, hashed so an edited strategy restarts cleanly ---


@dataclass(frozen=True)
class SetWeightStep:
    weight: int  # percent of users on the canary


@dataclass(frozen=True)
class PauseStep:
    seconds: float | None  # None: wait for a human (`conveyor promote`)


@dataclass(frozen=True)
class AnalysisStep:
    template: str  # an `analysis:` template; the step blocks until its run ends


@dataclass(frozen=True)
class HeaderRouteStep:
    header: str  # requests carrying header == value go to the canary whatever the weight
    value: str


Step = SetWeightStep | PauseStep | AnalysisStep | HeaderRouteStep

_STEP_TYPES: dict[str, type[Step]] = {
    "set_weight": SetWeightStep,
    "pause": PauseStep,
    "analysis": AnalysisStep,
    "set_header_route": HeaderRouteStep,
}
_STEP_NAMES = {cls: name for name, cls in _STEP_TYPES.items()}


def step_to_json(step: Step) -> dict[str, Any]:
    return {"type": _STEP_NAMES[type(step)], **dataclasses.asdict(step)}


def step_from_json(data: Mapping[str, Any]) -> Step:
    values = dict(data)
    return _STEP_TYPES[values.pop("type")](**values)


def describe_step(step: Step) -> str:
    if isinstance(step, SetWeightStep):
        return f"set weight {step.weight}%"
    if isinstance(step, PauseStep):
        return "pause until promoted" if step.seconds is None else f"pause {step.seconds:g}s"
    if isinstance(step, AnalysisStep):
        return f"analysis {step.template}"
    return f"route {step.header}: {step.value} to the canary"


@dataclass(frozen=True)
class StrategySpec:
    kind: StrategyKind
    max_surge: int = 1
    max_unavailable: int = 0
    scale_down_delay: float = 30.0
    auto_promote: bool = True
    steps: tuple[Step, ...] = ()
    background_analysis: str | None = None
    min_ready: float = 0.0  # rolling: seconds a new instance stays ready before it is available

    def to_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["steps"] = [step_to_json(s) for s in self.steps]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StrategySpec:
        values = dict(data)
        values["steps"] = tuple(step_from_json(s) for s in values.get("steps", ()))
        return cls(**values)

    @property
    def steps_hash(self) -> str:
        """Argo's CurrentStepHash: a changed list of steps restarts the step index."""
        text = json.dumps([step_to_json(s) for s in self.steps], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Triggers:
    """When a release rolls back on its own (the environment's `rollback:` block)."""

    error_rate: float = 0.05
    min_requests: int = 1  # a floor on the window's requests; the sequential test needs none
    window: float = 10.0
    max_restarts: int = 2
    verification: float = 15.0


@dataclass(frozen=True)
class RolloutSpec:
    release_id: int
    revision: int
    version: str  # template key of the release being rolled out
    desired: int
    strategy: StrategySpec
    progress_deadline: float
    triggers: Triggers
    stable_version: str | None = None  # what users return to; None on a first deploy
    stable_revision: int | None = None
    stable_desired: int = 0
    preview_check: bool = True  # blue-green: verify through the preview address before switching
    migrate: bool = False  # run the plan's ``migrate:`` once before any new instance starts

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["strategy"] = self.strategy.to_json()
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RolloutSpec:
        values = dict(data)
        values["strategy"] = StrategySpec.from_json(values["strategy"])
        values["triggers"] = Triggers(**values["triggers"])
        return cls(**values)


@dataclass(frozen=True)
class Abort:
    """Why a release is being rolled back, with what was seen (stored as evidence)."""

    reason: str  # "crash-loop" | "progress-deadline" | "error-rate" | "preview-failed" | "manual"
    message: str
    at: float
    evidence: Mapping[str, Any] = field(default_factory=dict)
    actor: str = "conveyor"


@dataclass(frozen=True)
class RolloutStatus:
    phase: Phase = Phase.PENDING
    started_at: float | None = None
    progress_at: float | None = None
    ready_seen: tuple[str, ...] = ()  # new instances already reported ready on the ledger
    weights: Mapping[str, int] = field(default_factory=dict)  # what the router was last told
    switched_at: float | None = None
    verify_until: float | None = None
    cleanup_at: float | None = None
    preview_failures: int = 0
    abort: Abort | None = None
    finished_at: float | None = None
    message: str = "waiting to start"
    # canary
    step_index: int = 0
    step_started_at: float | None = None
    steps_hash: str | None = None
    paused: str | None = None  # why progress is held (a pause step, a human, an inconclusive run)
    promote: Literal["step", "full"] | None = None  # a human's `conveyor promote [--full]`
    header_route: tuple[str, str] | None = None
    # migrations
    migration: Literal["running", "succeeded", "failed"] | None = None
    # who asked a server that does not drive the environment to roll back (leases)
    rollback_requested: str | None = None

    @property
    def done(self) -> bool:
        """Nothing left to do: terminal phase and no old instances waiting to be scaled down."""
        return self.phase.terminal and self.cleanup_at is None

    def evolve(self, **changes: Any) -> RolloutStatus:
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["phase"] = self.phase.value
        data["ready_seen"] = list(self.ready_seen)
        data["weights"] = dict(self.weights)
        data["header_route"] = list(self.header_route) if self.header_route else None
        if self.migration is None:
            # Only releases that run a migration carry the field, so every status stored
            # before migrations existed reads back, and writes back, byte for byte.
            del data["migration"]
        if self.rollback_requested is None:  # likewise: only while a request is pending
            del data["rollback_requested"]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RolloutStatus:
        values = dict(data)
        values["phase"] = Phase(values["phase"])
        values["ready_seen"] = tuple(values.get("ready_seen", ()))
        values["weights"] = dict(values.get("weights", {}))
        values.pop("analysis", None)  # analysis runs are stored beside the status, see driver
        if values.get("header_route"):
            values["header_route"] = tuple(values["header_route"])
        if values.get("abort") is not None:
            values["abort"] = Abort(**values["abort"])
        return cls(**values)


@dataclass(frozen=True)
class TrafficWindow:
    """What the router saw for one version over the trigger window.

    ``lifetime_requests`` is everything the router has counted for the version, which tells
    the trigger how many windows of it have been judged before (``core.judge``).
    """

    requests: int
    errors: int
    seconds: float
    lifetime_requests: int | None = None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class PreviewCheck:
    ok: bool
    detail: str


@dataclass(frozen=True)
class Observations:
    """Instances by role: of this release (`new`), of the stable one (`old`), of neither."""

    new: tuple[InstanceObservation, ...] = ()
    old: tuple[InstanceObservation, ...] = ()
    others: tuple[InstanceObservation, ...] = ()
    traffic: TrafficWindow | None = None  # the new version's traffic over triggers.window
    preview: PreviewCheck | None = None
    analysis: Mapping[str, AnalysisState] = field(default_factory=dict)  # by run key
    launch_failure: str | None = None
    """Why the runtime could not start an instance of this release at all (its reason,
    e.g. a secret that cannot be read): no retry can help, the release rolls back."""
    approval: ApprovalState | None = None  # a release waiting for people: where it stands
    migration: MigrationRun | None = None  # the release's migration, run this tick


@dataclass(frozen=True)
class MigrationRun:
    """How the ``migrate:`` command went: its exit, how long it took, what it printed
    (masked, the tail only)."""

    ok: bool
    exit_code: int | None
    seconds: float
    output: str
    detail: str  # "exit 0", "exit 1", "timed out after 600s", "could not start: ..."


@dataclass(frozen=True)
class AnalysisState:
    """Where an analysis run stands: running, successful, failed, inconclusive or error."""

    phase: str
    message: str = ""
    evidence: Mapping[str, Any] = field(default_factory=dict)


# --- actions ------------------------------------------------------------------------


@dataclass(frozen=True)
class StartInstances:
    version: str
    count: int


@dataclass(frozen=True)
class StopInstances:
    instance_ids: tuple[str, ...]
    why: str


@dataclass(frozen=True)
class SetWeights:
    weights: Mapping[str, int]


@dataclass(frozen=True)
class CheckPreview:
    """Send a request through the preview address and observe the answer next tick."""


@dataclass(frozen=True)
class RunAnalysis:
    """Start (once) the analysis run `key` from `template`; its phase is observed each tick."""

    key: str
    template: str


@dataclass(frozen=True)
class RunMigration:
    """Run the plan's ``migrate:`` command once, now, before any new instance starts; its
    result is observed next tick (``Observations.migration``), as a preview check's is."""


@dataclass(frozen=True)
class Wait:
    why: str


Action = (
    StartInstances | StopInstances | SetWeights | CheckPreview | RunAnalysis | RunMigration | Wait
)


@dataclass(frozen=True)
class Event:
    kind: str
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    action: Action
    status: RolloutStatus
    events: tuple[Event, ...] = ()
