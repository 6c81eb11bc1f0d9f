"""Votes on releases waiting for people, and the emergency path's after-the-fact review.

A vote is a ledger event on the release (``approval.approved`` or ``approval.rejected``)
naming the content hash it was given for and the hash of the approval page the voter was
shown, so an auditor can later prove what a person saw when they said yes. The release's
driver reads the votes each tick and the pure rules of ``core.approval`` decide; nothing
here moves a release itself.

Who may vote: whoever ``authorize`` allows to approve in the environment (the token's scope
narrowed by the applied ``access:`` policy), and, when the environment names reviewers,
one of them. A voter who authored the change is refused at once with the reason, rather
than having the vote quietly not count.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from conveyor.application.access import Permission, authorize
from conveyor.application.caller import Caller
from conveyor.application.policy import Policy
from conveyor.controller.approvals import approval_state
from conveyor.core.approval import authors_of, is_author
from conveyor.core.state import Phase
from conveyor.errors import Conflict, Forbidden, NotFound, Refused, UsageError
from conveyor.store.records import NewEvent, ReleaseRecord
from conveyor.store.repository import Store

REVIEW_KINDS = ("emergency.override", "emergency.reviewed")
MAX_COMMENT = 2000


def _member(identity: str, policy: Policy, reference: str) -> bool:
    members = {m.lower() for m in policy.members(reference)}
    return "*" in members or identity.lower() in members


@dataclass
class Approvals:
    store: Store
    policy: Callable[[], Policy]
    clock: Callable[[], float]

    def pending(self, caller: Caller) -> list[ReleaseRecord]:
        authorize(caller, Permission.READ)
        return [r for r in self.store.active_releases() if r.phase == Phase.PENDING_APPROVAL]

    def vote(
        self,
        caller: Caller,
        release_id: int,
        *,
        approve: bool,
        comment: str,
        content: str | None,
        page_hash: str | None,
    ) -> ReleaseRecord:
        """Record ``caller``'s approval or rejection of a release waiting for people."""
        release = self.store.get_release(release_id)
        policy = self.policy()
        authorize(caller, Permission.APPROVE, release.env, policy)
        if len(comment) > MAX_COMMENT:
            raise UsageError(f"a comment has at most {MAX_COMMENT} characters")
        if release.phase != Phase.PENDING_APPROVAL:
            raise Conflict(
                f"{release.name} is not waiting for approval ({release.phase})",
                hint="see what waits with `conveyor approvals`",
            )
        rule = release.plan.approval
        assert rule is not None  # a release waits for approval only with a rule
        if rule.reviewers and not any(
            caller.actor.lower() in {m.lower() for m in policy.members(r)}
            or "*" in policy.members(r)
            for r in rule.reviewers
        ):
            raise Forbidden(
                f"{caller.actor} is not among the reviewers of {release.env} "
                f"({', '.join(rule.reviewers)})",
                hint="ask one of them, or change approval.from in conveyor.yaml",
            )
        if rule.prevent_self_review and is_author(
            caller.actor, authors_of(release.actor, release.plan.authors)
        ):
            raise Refused(
                f"{caller.actor} asked for {release.name} or wrote a commit it brings, and "
                f"{release.env} requires someone else's approval",
                hint="ask another reviewer (approval.prevent_self_review)",
            )
        current = release.plan.content_hash
        if content is not None and content != current:
            raise Conflict(
                f"{release.name} is not what you were shown: its content is now {current[:19]}…",
                hint=f"look again: conveyor show-approval {release.id}",
            )
        kind = "approval.approved" if approve else "approval.rejected"
        details: dict[str, Any] = {"content": current, "comment": comment}
        if page_hash is not None:
            details["page"] = page_hash
        self.store.append_events(
            [
                NewEvent(
                    kind, details, service=release.service, env=release.env, release_id=release.id
                )
            ],
            actor=caller.actor,
        )
        return self.store.get_release(release.id)

    def state(self, release: ReleaseRecord) -> dict[str, Any]:
        """Where a release waiting for people stands, for pages and status."""
        rule = release.plan.approval
        state = approval_state(self.store, release, self.clock())
        if rule is None or state is None:
            return {"required": False}
        return {
            "required": True,
            "rule": rule.to_json(),
            "verdict": state.verdict,
            "approvals": list(state.approvals),
            "missing": state.missing,
            "message": state.message,
            "ignored": list(state.ignored),
            "requested_at": release.created_at,
            "expires_at": release.created_at + rule.expires,
            "content": release.plan.content_hash,
        }

    # --- the emergency path's review ---------------------------------------------------

    def review(self, caller: Caller, release_id: int, comment: str) -> ReleaseRecord:
        """Sign off an emergency release after the fact: by someone other than who used it."""
        release = self.store.get_release(release_id)
        authorize(caller, Permission.APPROVE, release.env, self.policy())
        events = self.store.events(release_id=release.id, kinds=REVIEW_KINDS)
        overrides = [e for e in events if e.kind == "emergency.override"]
        if not overrides:
            raise NotFound(
                f"{release.name} did not use the emergency path; there is nothing to review",
                hint="reviews are for releases deployed with --emergency",
            )
        if any(e.kind == "emergency.reviewed" for e in events):
            raise Conflict(f"{release.name} has been reviewed already")
        if caller.actor.lower() == overrides[0].actor.lower():
            raise Refused(
                f"{caller.actor} used the emergency path for {release.name} and cannot review it",
                hint="someone else signs it off",
            )
        if not comment.strip():
            raise UsageError("a review says what was checked", hint='--comment "..."')
        self.store.append_events(
            [
                NewEvent(
                    "emergency.reviewed",
                    {"comment": comment[:MAX_COMMENT], "override_by": overrides[0].actor},
                    service=release.service,
                    env=release.env,
                    release_id=release.id,
                )
            ],
            actor=caller.actor,
        )
        return release

    def open_reviews(self, service: str | None = None, env: str | None = None) -> list[int]:
        """Releases that used the emergency path and are not reviewed yet."""
        events = list(self.store.every_event(service=service, env=env, kinds=REVIEW_KINDS))
        reviewed = {e.release_id for e in events if e.kind == "emergency.reviewed"}
        return sorted(
            {
                e.release_id
                for e in events
                if e.kind == "emergency.override"
                and e.release_id not in reviewed
                and e.release_id is not None
            }
        )
