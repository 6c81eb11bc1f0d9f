"""The ``Notifier`` seam and the notification it carries.

Conveyor records everything on the ledger; a notifier pushes the few events a human must
act on or should know about right away — a canary held on an inconclusive analysis, a
rollout paused for promotion, a release rolled back or failed. Delivery is best effort and
never blocks a rollout: a notifier that fails is logged, and the ledger stays the record.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from conveyor.config.settings import DEFAULT_NOTIFY_EVENTS

DEFAULT_EVENTS = DEFAULT_NOTIFY_EVENTS


@dataclass(frozen=True)
class Notification:
    kind: str
    service: str
    env: str
    revision: int
    at: float
    details: Mapping[str, Any] = field(default_factory=dict)
    ledger_seq: int | None = None
    version: str | None = None  # the release's template key: what runs
    commit: str | None = None
    digest: str | None = None  # the artifact's sha256

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "service": self.service,
            "env": self.env,
            "revision": self.revision,
            "version": self.version,
            "commit": self.commit,
            "digest": self.digest,
            "at": self.at,
            "details": dict(self.details),
            "ledger_seq": self.ledger_seq,
        }


class Notifier(Protocol):
    kind: str

    def wants(self, event_kind: str) -> bool:
        """Whether this notifier is interested in events of this kind."""

    async def notify(self, notification: Notification) -> None:
        """Deliver; raise on failure (the caller logs it and moves on)."""
