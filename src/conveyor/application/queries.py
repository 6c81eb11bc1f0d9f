"""What people and tools ask without changing anything: what runs where, and what happened.

Answers come from the store (releases, the ledger), the runtime (instances as they are
now) and the plans (a canary's steps). The rows are shaped for `conveyor status` and the
API; nothing here writes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from conveyor.controller.controller import Controller
from conveyor.core.state import Phase, describe_step
from conveyor.store.records import ReleaseRecord
from conveyor.store.repository import Store


@dataclass(frozen=True)
class StatusRow:
    """One row of `conveyor status`: what runs where, and what is changing."""

    service: str
    env: str
    revision: int | None
    version: str | None
    artifact: str | None
    config_version: str | None
    ready: int
    desired: int
    phase: str
    rollout_revision: int | None
    message: str
    address: str
    preview_address: str | None
    weights: Mapping[str, int]
    instances: list[dict[str, Any]]
    step: str | None = None  # canary: "2/5 set weight 20%"
    canary_percent: int | None = None
    analysis: Mapping[str, Any] | None = None  # latest verdict per analysis run
    paused: str | None = None
    revisions: Mapping[str, int] = field(default_factory=dict)  # template key -> revision
    open_reviews: list[dict[str, int]] = field(default_factory=list)
    """Releases here that used the emergency path and nobody has reviewed yet: id, revision."""

    def to_json(self) -> dict[str, Any]:
        return {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in self.__dict__.items()}


def status_rows(
    store: Store,
    controller: Controller,
    env: str | None = None,
    open_reviews: Iterable[int] = (),
) -> list[StatusRow]:
    """One row per service and environment; ``open_reviews`` are the release ids whose
    emergency review is open (``Approvals.open_reviews``), shown on their rows."""
    reviews: dict[tuple[str, str], list[dict[str, int]]] = {}
    for release_id in open_reviews:
        reviewed = store.get_release(release_id)
        reviews.setdefault((reviewed.service, reviewed.env), []).append(
            {"id": reviewed.id, "revision": reviewed.revision}
        )
    rows = []
    addresses = {(a.service, a.env): a for a in store.addresses()}
    currents = store.current_releases()  # one query, not one per row
    for latest in store.latest_per_service_env(env):
        current = currents.get((latest.service, latest.env))
        serving = current or latest
        instances = controller.observe(latest.service, latest.env)
        status = latest.status
        address = addresses.get((latest.service, latest.env))
        step, percent, verdicts = canary_view(latest)
        rows.append(
            StatusRow(
                service=latest.service,
                env=latest.env,
                revision=current.revision if current else None,
                version=(serving.plan.commit or "")[:12] or None,
                artifact=serving.artifact_digest,
                config_version=serving.config_version,
                ready=sum(1 for i in instances if i.ready and i.version == serving.template),
                desired=serving.instances,
                phase=latest.phase.value,
                rollout_revision=latest.revision,
                message=status.message,
                address=f"http://{address.host}:{address.port}" if address else "",
                preview_address=(
                    f"http://{address.host}:{address.preview_port}" if address else None
                ),
                weights=dict(status.weights),
                instances=[
                    {
                        "id": i.instance_id,
                        "revision": i.revision,
                        "version": i.version,
                        "state": i.state,
                        "ready": i.ready,
                        "restarts": i.restarts,
                        "pid": i.pid,
                        "port": i.port,
                        "last_probe": i.last_probe.detail if i.last_probe else None,
                    }
                    for i in instances
                ],
                step=step,
                canary_percent=percent,
                analysis=verdicts,
                paused=status.paused if latest.phase.in_progress else None,
                revisions=_revisions(latest, current),
                open_reviews=reviews.get((latest.service, latest.env), []),
            )
        )
    return rows


def canary_view(release: ReleaseRecord) -> tuple[str | None, int | None, dict[str, Any] | None]:
    """Where a canary stands, for `status`: its step, its share of users, its verdicts."""
    strategy = release.plan.strategy
    if strategy.kind != "canary" or not release.phase.in_progress:
        return None, None, None
    steps = strategy.steps
    status = release.status
    index = status.step_index
    step = (
        f"{index + 1}/{len(steps)} {describe_step(steps[index])}"
        if index < len(steps)
        else "promoting"
    )
    total = sum(status.weights.values()) or 1
    percent = round(100 * status.weights.get(release.template, 0) / total)
    verdicts = {key: run.get("summary", run.get("phase")) for key, run in release.analysis.items()}
    return step, percent, verdicts or None


def _revisions(latest: ReleaseRecord, current: ReleaseRecord | None) -> dict[str, int]:
    """Revisions beside the template keys people see in weights (`{'t3fa..': 20}`)."""
    out = {latest.template: latest.revision}
    if latest.plan.stable is not None:
        out.setdefault(latest.plan.stable.version, latest.plan.stable.revision)
    if current is not None:
        out.setdefault(current.template, current.revision)
    return out


def release_json(release: ReleaseRecord) -> dict[str, Any]:
    """A release as the API shows it: the stored fields, the plan, the status as JSON."""
    return {
        "id": release.id,
        "name": release.name,
        "service": release.service,
        "env": release.env,
        "revision": release.revision,
        "artifact_digest": release.artifact_digest,
        "template": release.template,
        "config": dict(release.config),
        "config_version": release.config_version,
        "instances": release.instances,
        "phase": release.phase.value,
        "done": release.done,
        "status": {**release.status.to_json(), "analysis": dict(release.analysis)},
        "plan": release.plan.to_json(),
        "stable_release_id": release.stable_release_id,
        "rollback_of": release.rollback_of,
        "reason": release.reason,
        "actor": release.actor,
        "created_at": release.created_at,
        "updated_at": release.updated_at,
        "terminal": release.phase in TERMINAL,
    }


TERMINAL = frozenset(p for p in Phase if p.terminal)
