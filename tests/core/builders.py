"""Small constructors for core records, so each table row states only what it is about.

Two template keys are used throughout: ``NEW`` (the release being rolled out) and ``OLD``
(the stable one users return to). Instance ids sort in creation order within a version.
"""

from __future__ import annotations

from typing import Any

from conveyor.core.model import InstanceObservation, InstanceState, ProbeResult
from conveyor.core.state import (
    Abort,
    Observations,
    Phase,
    PreviewCheck,
    RolloutSpec,
    RolloutStatus,
    StrategyKind,
    StrategySpec,
    TrafficWindow,
    Triggers,
)

NEW = "tnew000000"
OLD = "told000000"
OTHER = "tother0000"
T0 = 1_000.0


def inst(
    instance_id: str,
    version: str | None = None,
    *,
    ready: bool = True,
    state: InstanceState = "running",
    restarts: int = 0,
    started_at: float = T0,
    port: int = 0,
    last_probe: str | None = None,
    ready_since: float | None = None,
) -> InstanceObservation:
    """An instance whose version defaults from its id prefix: ``n1`` is NEW, ``o1`` OLD."""
    if version is None:
        version = {"n": NEW, "o": OLD, "x": OTHER}[instance_id[0]]
    return InstanceObservation(
        instance_id=instance_id,
        service="web",
        env="prod",
        version=version,
        revision=2 if version == NEW else 1,
        host="127.0.0.1",
        port=port or 10_000 + sum(map(ord, instance_id)),
        pid=4242,
        state=state,
        ready=ready,
        restarts=restarts,
        started_at=started_at,
        last_probe=ProbeResult(T0, ready, last_probe) if last_probe else None,
        ever_ready=ready,
        ready_since=ready_since,
    )


def news(*ready: bool, restarts: int = 0) -> tuple[InstanceObservation, ...]:
    """New instances n1, n2, ... with the given readiness."""
    return tuple(inst(f"n{i + 1}", ready=r, restarts=restarts) for i, r in enumerate(ready))


def olds(*ready: bool) -> tuple[InstanceObservation, ...]:
    return tuple(inst(f"o{i + 1}", ready=r) for i, r in enumerate(ready))


def spec(
    kind: StrategyKind = "rolling",
    *,
    desired: int = 3,
    stable_desired: int = 3,
    max_surge: int = 1,
    max_unavailable: int = 0,
    scale_down_delay: float = 30.0,
    min_ready: float = 0.0,
    preview_check: bool = True,
    first: bool = False,
    progress_deadline: float = 60.0,
    **triggers: Any,
) -> RolloutSpec:
    """A release of NEW replacing OLD (or a first release when ``first``)."""
    return RolloutSpec(
        release_id=7,
        revision=2,
        version=NEW,
        desired=desired,
        strategy=StrategySpec(
            kind, max_surge, max_unavailable, scale_down_delay, min_ready=min_ready
        ),
        progress_deadline=progress_deadline,
        triggers=Triggers(**triggers),
        stable_version=None if first else OLD,
        stable_revision=None if first else 1,
        stable_desired=0 if first else stable_desired,
        preview_check=preview_check,
    )


def progressing(**changes: Any) -> RolloutStatus:
    """A rollout that started at T0 and last progressed at T0, users on OLD."""
    base = RolloutStatus(
        phase=Phase.PROGRESSING,
        started_at=T0,
        progress_at=T0,
        weights={OLD: 100},
        message="starting",
    )
    return base.evolve(**changes)


def verifying(**changes: Any) -> RolloutStatus:
    base = progressing(
        phase=Phase.VERIFYING,
        weights={NEW: 100},
        switched_at=T0 + 10,
        verify_until=T0 + 25,
        progress_at=T0 + 10,
    )
    return base.evolve(**changes)


def rolling_back(reason: str = "crash-loop", at: float = T0 + 20, **changes: Any) -> RolloutStatus:
    abort = Abort(reason=reason, message=f"{reason} happened", at=at)
    return progressing(phase=Phase.ROLLING_BACK, abort=abort, **changes)


def observe(
    new: tuple[InstanceObservation, ...] = (),
    old: tuple[InstanceObservation, ...] = (),
    others: tuple[InstanceObservation, ...] = (),
    *,
    traffic: tuple[int, int] | None = None,
    preview: bool | None = None,
) -> Observations:
    """Observations; ``traffic`` is (requests, errors) over a 10 s window."""
    return Observations(
        new=new,
        old=old,
        others=others,
        traffic=TrafficWindow(traffic[0], traffic[1], 10.0) if traffic else None,
        preview=None
        if preview is None
        else PreviewCheck(preview, "200 OK" if preview else "503 Service Unavailable"),
    )
