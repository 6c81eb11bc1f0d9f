"""How each strategy moves a rollout forward while nothing is wrong.

Each function answers "given what runs, what is the next step towards all users on the new
version?" and never looks at failure triggers (``core.rollout`` does that first). Weights
follow readiness: an instance that is not ready takes no traffic, whatever the step.
"""

from __future__ import annotations

from conveyor.core.model import InstanceObservation
from conveyor.core.state import (
    CheckPreview,
    Decision,
    Event,
    Observations,
    Phase,
    RolloutSpec,
    RolloutStatus,
    SetWeights,
    StartInstances,
    StopInstances,
    Wait,
)
from conveyor.core.traffic import same_split


def recreate(spec: RolloutSpec, status: RolloutStatus, obs: Observations, now: float) -> Decision:
    """Stop everything old, then start the new version: simple, with downtime by design."""
    if obs.old:
        ids = _ids(obs.old)
        return Decision(
            StopInstances(ids, "recreate: old version goes first"),
            status.evolve(weights={}, progress_at=now, message="stopping the old version"),
            (Event("instances.stopped", {"instances": list(ids), "why": "recreate"}),),
        )
    start = _start_missing(spec, status, obs.new, spec.desired)
    if start is not None:
        return start
    ready = _ready(obs.new)
    if len(ready) < spec.desired:
        return _waiting(status, ready, spec)
    return switch(spec, status, now)


def rolling(spec: RolloutSpec, status: RolloutStatus, obs: Observations, now: float) -> Decision:
    """Replace instances a few at a time within max_surge / max_unavailable.

    Each new instance must be available before an old one is removed (with the default
    max_unavailable 0): ready, and for ``min_ready`` seconds, so a version that crashes soon
    after passing readiness is caught while the old instances still serve. Traffic is shared
    per ready instance, so the share of users on the new version grows as fast as proven
    capacity does.
    """
    d = spec.desired
    surge, unavailable = spec.strategy.max_surge, spec.strategy.max_unavailable
    new, old = obs.new, obs.old
    ready_new, ready_old = _ready(new), _ready(old)
    available_new = _available(ready_new, spec.strategy.min_ready, now)

    want = {
        v: n
        for v, n in ((spec.version, len(ready_new)), (spec.stable_version, len(ready_old)))
        if v is not None and n > 0
    }
    if want and not same_split(want, status.weights):
        return Decision(
            SetWeights(want),
            status.evolve(weights=want),
            (Event("traffic.shifted", {"weights": want}),),
        )
    excess = _excess(new, d)
    if excess is not None:
        return excess.with_status(status)
    room = d + surge - len(new) - len(old)
    missing = d - len(new)
    if missing > 0 and room > 0:
        count = min(missing, room)
        return Decision(
            StartInstances(spec.version, count),
            status.evolve(message=f"starting {count} new instance(s)"),
            (Event("instances.started", {"version": spec.version, "count": count}),),
        )
    if old:
        available = len(available_new) + len(ready_old)
        removable = max(0, available - (d - unavailable))
        removable = min(removable, available - 1)  # never leave users with no ready instance
        unready_old = [i for i in old if not i.ready]
        victims = [
            *unready_old,
            *sorted(ready_old, key=lambda i: i.instance_id)[: max(0, removable)],
        ]
        if victims:
            ids = _ids(victims)
            return Decision(
                StopInstances(ids, "rolling: replaced by ready new instances"),
                status.evolve(progress_at=now, message=f"replacing {len(ids)} old instance(s)"),
                (Event("instances.stopped", {"instances": list(ids), "why": "replaced"}),),
            )
    if len(new) == d and len(available_new) == d and not old:
        return switch(spec, status, now)
    if missing > 0 and old and len(available_new) == len(new):
        # No room to start and nothing removable without an outage (max_surge 0 with a
        # single ready instance left): surge by one rather than stall or drop users.
        return Decision(
            StartInstances(spec.version, 1),
            status.evolve(message="starting 1 new instance (temporary surge to stay available)"),
            (Event("instances.started", {"version": spec.version, "count": 1}),),
        )
    soaking = len(ready_new) - len(available_new)
    return _waiting(status, ready_new, spec, old_left=len(old), soaking=soaking)


def _available(
    ready: list[InstanceObservation], min_ready: float, now: float
) -> list[InstanceObservation]:
    """Ready instances that have stayed ready ``min_ready`` seconds; a runtime that cannot
    say since when an instance is ready counts it as available once ready."""
    if min_ready <= 0:
        return ready
    return [i for i in ready if i.ready_since is None or now - i.ready_since >= min_ready]


def blue_green(spec: RolloutSpec, status: RolloutStatus, obs: Observations, now: float) -> Decision:
    """Start the whole new version beside the old, verify it through the preview, switch at once."""
    start = _start_missing(spec, status, obs.new, spec.desired)
    if start is not None:
        return start
    excess = _excess(obs.new, spec.desired)
    if excess is not None:
        return excess.with_status(status)
    ready = _ready(obs.new)
    if len(ready) < spec.desired:
        return _waiting(status, ready, spec)
    if spec.preview_check:
        if obs.preview is None:
            return Decision(
                CheckPreview(), status.evolve(message="all new instances ready; checking preview")
            )
        if not obs.preview.ok:
            failures = status.preview_failures + 1
            return Decision(
                CheckPreview(),
                status.evolve(
                    preview_failures=failures,
                    message=f"preview check failed ({obs.preview.detail}); retrying",
                ),
                (Event("preview.failed", {"detail": obs.preview.detail, "failures": failures}),),
            )
    if not spec.strategy.auto_promote and status.promote is None:
        reason = "new version ready and verified on the preview; `conveyor promote` to switch"
        if status.paused == reason:
            return Decision(Wait("awaiting promotion"), status)
        return Decision(
            Wait("awaiting promotion"),
            status.evolve(paused=reason, message=reason),
            (Event("rollout.paused", {"reason": reason}),),
        )
    return switch(spec, status, now, preview=obs.preview.detail if obs.preview else None)


def keep_new_in_shape(
    spec: RolloutSpec, status: RolloutStatus, obs: Observations
) -> Decision | None:
    """While verifying: replace lost capacity and follow readiness with the weights."""
    start = _start_missing(spec, status, obs.new, spec.desired)
    if start is not None:
        return start
    excess = _excess(obs.new, spec.desired)
    if excess is not None:
        return excess.with_status(status)
    return None


# --- helpers --------------------------------------------------------------------------


def switch(
    spec: RolloutSpec, status: RolloutStatus, now: float, preview: str | None = None
) -> Decision:
    weights = {spec.version: 100}
    details: dict[str, object] = {
        "to": spec.version,
        "to_revision": spec.revision,
        "weights": weights,
    }
    if preview is not None:
        details["preview"] = preview
    return Decision(
        SetWeights(weights),
        status.evolve(
            phase=Phase.VERIFYING,
            paused=None,
            promote=None,
            weights=weights,
            switched_at=now,
            verify_until=now + spec.triggers.verification,
            progress_at=now,
            message="all traffic on the new version; verifying",
        ),
        (
            Event("traffic.switched", details),
            Event("verification.started", {"seconds": spec.triggers.verification}),
        ),
    )


def _start_missing(
    spec: RolloutSpec,
    status: RolloutStatus,
    new: tuple[InstanceObservation, ...],
    desired: int,
) -> Decision | None:
    missing = desired - len(new)
    if missing <= 0:
        return None
    return Decision(
        StartInstances(spec.version, missing),
        status.evolve(message=f"starting {missing} new instance(s)"),
        (Event("instances.started", {"version": spec.version, "count": missing}),),
    )


class _Excess:
    def __init__(self, ids: tuple[str, ...]) -> None:
        self.ids = ids

    def with_status(self, status: RolloutStatus) -> Decision:
        return Decision(
            StopInstances(self.ids, "more instances than desired"),
            status,
            (Event("instances.stopped", {"instances": list(self.ids), "why": "excess"}),),
        )


def _excess(new: tuple[InstanceObservation, ...], desired: int) -> _Excess | None:
    extra = len(new) - desired
    if extra <= 0:
        return None
    # Unready first, then the youngest: keep what already serves.
    ranked = sorted(new, key=lambda i: (i.ready, -i.started_at, i.instance_id))
    return _Excess(_ids(ranked[:extra]))


def _ready(instances: tuple[InstanceObservation, ...]) -> list[InstanceObservation]:
    return [i for i in instances if i.ready]


def _ids(instances: list[InstanceObservation] | tuple[InstanceObservation, ...]) -> tuple[str, ...]:
    return tuple(sorted(i.instance_id for i in instances))


def _waiting(
    status: RolloutStatus,
    ready: list[InstanceObservation],
    spec: RolloutSpec,
    old_left: int = 0,
    soaking: int = 0,
) -> Decision:
    message = f"{len(ready)}/{spec.desired} new instances ready"
    if old_left:
        message += f", {old_left} old left"
    if soaking:
        message += f"; {soaking} to stay ready {spec.strategy.min_ready:g}s before an old one goes"
    return Decision(Wait(message), status.evolve(message=message))
