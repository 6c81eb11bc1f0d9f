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


@dataclass(frozen=True)
class ArtifactRecord:
    """An immutable build output, addressed by the sha256 of its archive bytes."""

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

    @property
    def short(self) -> str:
        """The first 12 hex characters: enough to be unique in practice, short enough to read."""
        return self.digest.removeprefix("sha256:")[:12]


@dataclass(frozen=True)
class NewRelease:
    """A request to run an artifact with a config in an environment.

    ``spec`` and ``status`` belong to the core and are stored verbatim; the store only keeps
    them consistent with the phase and the ledger.
    """

    service: str
    env: str
    artifact_digest: str
    template: str
    config: Mapping[str, str]
    config_version: str
    instances: int
    strategy: Mapping[str, Any]
    spec: Mapping[str, Any]
    status: Mapping[str, Any]
    phase: str
    stable_release_id: int | None
    rollback_of: int | None = None
    reason: str | None = None


@dataclass(frozen=True)
class ReleaseRecord:
    """A release as stored, with its current rollout status.

    ``status_version`` is the optimistic-concurrency token: an update must name the version it
    read, so two controllers can never silently overwrite each other's decisions.
    """

    id: int
    service: str
    env: str
    revision: int
    artifact_digest: str
    template: str
    config: Mapping[str, str]
    config_version: str
    instances: int
    strategy: Mapping[str, Any]
    spec: Mapping[str, Any]
    status: Mapping[str, Any]
    phase: str
    done: bool
    stable_release_id: int | None
    rollback_of: int | None
    reason: str | None
    actor: str
    created_at: float
    updated_at: float
    status_version: int

    @property
    def name(self) -> str:
        """How people refer to a release: ``catalog/staging r3``."""
        return f"{self.service}/{self.env} r{self.revision}"


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
class LedgerCheck:
    """The verdict of walking the hash chain from genesis to head."""

    ok: bool
    checked: int
    first_bad_seq: int | None = None
    problem: str | None = None
