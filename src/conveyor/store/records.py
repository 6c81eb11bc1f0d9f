"""The records the state store hands out and accepts.

Rows never leave ``store/``: every read is turned into one of these frozen dataclasses, so the
rest of Conveyor depends on plain data rather than on SQLAlchemy sessions that could lazily
hit the database from the wrong thread. ``New*`` records are what callers ask the store to
write; the store fills in what only it can know (ids, revisions, times, hashes, actors).

JSON-ish fields are plain ``dict``s typed as ``Mapping`` so they serialise without help;
treat them as read-only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from conveyor.core.plan import ReleasePlan
from conveyor.core.state import Phase, RolloutSpec, RolloutStatus, StrategySpec


@dataclass(frozen=True)
class ArtifactRecord:
    """An immutable build output, addressed by the sha256 of its archive bytes.

    ``services`` are every service the bytes were built for (one codebase run as ``web``
    and ``worker`` builds to one digest); ``service`` is the first of them.
    """

    digest: str  # "sha256:<64 hex>"
    service: str
    commit: str | None
    branch: str | None
    dirty: bool | None
    created_at: float
    size: int
    files: int
    build_command: str
    outputs: tuple[str, ...]
    metadata: Mapping[str, Any] = field(default_factory=dict)
    services: tuple[str, ...] = ()

    @property
    def short(self) -> str:
        """The first 12 hex characters: enough to be unique in practice, short enough to read."""
        return self.digest.removeprefix("sha256:")[:12]

    def built_for(self, service: str) -> bool:
        return service in (self.services or (self.service,))


@dataclass(frozen=True)
class NewRelease:
    """A request to run a plan: the store numbers it and records it with its first status."""

    plan: ReleasePlan
    status: RolloutStatus
    reason: str | None = None
    rollback_of: int | None = None


@dataclass(frozen=True)
class GridRow:
    """The part of a release a grid of hundreds of them needs: no plan parsed, the commit
    from the artifact (``Store.grid``)."""

    id: int
    service: str
    env: str
    revision: int
    template: str
    instances: int
    commit: str | None
    created_at: float
    status: RolloutStatus
    strategy: StrategySpec

    @property
    def phase(self) -> Phase:
        return self.status.phase


@dataclass(frozen=True)
class ReleaseRecord:
    """A release as stored: its frozen plan and its current rollout status.

    ``status_version`` is the optimistic-concurrency token: an update must name the version it
    read, so two controllers can never silently overwrite each other's decisions.
    ``analysis`` holds the analysis runs the controller keeps beside the status (their
    measurements), opaque to the store.
    """

    id: int
    service: str
    env: str
    revision: int
    plan: ReleasePlan
    status: RolloutStatus
    done: bool
    rollback_of: int | None
    reason: str | None
    actor: str
    created_at: float
    updated_at: float
    status_version: int
    analysis: Mapping[str, Any] = field(default_factory=dict)

    @property
    def reason_is_fix(self) -> bool:
        """Created by ``deploy --fix`` (``releases._deploy_reason``)."""
        return (self.reason or "").startswith(("fix:", "emergency fix:"))

    @property
    def name(self) -> str:
        """How people refer to a release: ``catalog/staging r3``."""
        return f"{self.service}/{self.env} r{self.revision}"

    @property
    def phase(self) -> Phase:
        return self.status.phase

    @property
    def artifact_digest(self) -> str:
        return self.plan.artifact

    @property
    def template(self) -> str:
        return self.plan.version

    @property
    def config(self) -> Mapping[str, str]:
        return self.plan.config

    @property
    def config_version(self) -> str:
        return self.plan.config_version

    @property
    def instances(self) -> int:
        return self.plan.desired

    @property
    def stable_release_id(self) -> int | None:
        return self.plan.stable.release_id if self.plan.stable else None

    def rollout_spec(self) -> RolloutSpec:
        return self.plan.rollout_spec(self.id, self.revision)


@dataclass(frozen=True)
class NewEvent:
    """Something that happened, to be appended to the ledger.

    ``service``, ``env`` and ``release_id`` default from the release when the event is written
    together with a release, so callers only name them for free-standing events.
    """

    kind: str
    details: Mapping[str, Any] = field(default_factory=dict)
    service: str | None = None
    env: str | None = None
    release_id: int | None = None


@dataclass(frozen=True)
class EventRecord:
    """One link of the hash chain: ``hash`` covers every other field, ``prev_hash`` included."""

    seq: int
    at: float
    actor: str
    kind: str
    service: str | None
    env: str | None
    release_id: int | None
    details: Mapping[str, Any]
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class AddressRecord:
    """The stable front door of a service in an environment; it outlives every release."""

    service: str
    env: str
    host: str
    port: int
    preview_port: int


@dataclass(frozen=True)
class Checkpoint:
    """What a signed checkpoint says: link ``seq`` of the chain had ``hash`` at time ``at``.

    ``key`` is the fingerprint of the trusted key whose signature over that statement
    verified. Only ever built from an envelope that was opened (or just signed), so holding
    one means "someone with a trusted key vouched for this".
    """

    seq: int
    hash: str
    at: float
    key: str


@dataclass(frozen=True)
class CheckpointRecord:
    """A checkpoint row as stored. Only ``envelope`` is evidence: ``seq``, ``hash``, ``at``
    and ``key`` are copies for finding it, and are checked against the signature."""

    id: int
    seq: int
    hash: str
    at: float
    key: str
    reason: str
    envelope: Mapping[str, Any]


@dataclass(frozen=True)
class LedgerCheck:
    """The verdict of walking the hash chain, from genesis (``full``) or from a checkpoint.

    ``checked`` counts the events read and re-hashed. ``first_bad_seq`` and ``problem`` name
    the first broken link, ``fault`` its kind. ``checkpoint`` is the newest signed
    checkpoint the chain was found to agree with (the anchor of a verification from a
    checkpoint), ``head`` the tip as (seq, hash) the verdict is about.
    """

    ok: bool
    checked: int
    first_bad_seq: int | None = None
    problem: str | None = None
    fault: str | None = None  # one of ledger.FAULTS: what kind of break, for machines
    checkpoint: Checkpoint | None = None
    head: tuple[int, str] | None = None
    full: bool = True


@dataclass(frozen=True)
class TokenRecord:
    """An API token as stored: never its secret, only what it stands for."""

    id: str
    identity: str
    role: str
    environments: tuple[str, ...]  # ("*",) for every environment
    created_at: float
    created_by: str
    expires_at: float | None = None
    revoked_at: float | None = None
    last_used_at: float | None = None

    def usable(self, now: float) -> bool:
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)


@dataclass(frozen=True)
class PinnedKey:
    """A public key the server trusts; retired keys vouch only for what came before."""

    fingerprint: str
    public_pem: str
    added_at: float
    added_by: str
    retired_at: float | None = None
    note: str | None = None


@dataclass(frozen=True)
class LiveFlag:
    """A flag as last changed through the API: its whole JSON definition, and who/when."""

    key: str
    definition: Mapping[str, Any]
    revision: int  # the ledger seq of the change that wrote it
    updated_at: float
    updated_by: str


@dataclass(frozen=True)
class FlagRolloutRecord:
    """A guarded flag rollout: what was asked (``spec``) and where it stands (``status``)."""

    id: int
    flag: str
    env: str
    phase: str
    spec: Mapping[str, Any]
    status: Mapping[str, Any]
    version: int
    created_at: float
    created_by: str
    updated_at: float
