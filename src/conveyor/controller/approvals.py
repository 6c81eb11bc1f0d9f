"""Where a release waiting for people stands, read from the votes on the ledger.

Shared by the driver (which moves the release when the rules of ``core.approval`` say so)
and the application layer (which shows it), so both see the same thing.
"""

from __future__ import annotations

from collections.abc import Sequence

from conveyor.core.approval import VOTE_KINDS, ApprovalState, Vote, assess, authors_of
from conveyor.store.records import EventRecord, ReleaseRecord
from conveyor.store.repository import Store


def votes_of(events: Sequence[EventRecord]) -> list[Vote]:
    return [
        Vote(
            identity=e.actor,
            approve=e.kind == "approval.approved",
            content=str(e.details.get("content", "")),
            at=e.at,
            comment=str(e.details.get("comment", "")),
        )
        for e in events
        if e.kind in VOTE_KINDS
    ]


def approval_state(store: Store, release: ReleaseRecord, now: float) -> ApprovalState | None:
    rule = release.plan.approval
    if rule is None:
        return None
    return assess(
        rule,
        votes_of(store.events(release_id=release.id, kinds=VOTE_KINDS)),
        content=release.plan.content_hash,
        requested_at=release.created_at,
        authors=authors_of(release.actor, release.plan.authors),
        now=now,
    )
