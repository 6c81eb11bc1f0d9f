"""One approval, with the evidence: whether a release waiting for people may start.

An environment may require approvals before a release runs there (``approval:`` in
conveyor.yaml, frozen into the release's plan). The rules are GitHub environments' and
Argo CD's, with the gaps people complain about closed:

* **N distinct people.** ``required: 2`` needs two different identities; one person
  approving twice counts once.
* **Not the author.** With ``prevent_self_review``, the identity that asked for the release
  and the authors of the commits it brings cannot approve it.
* **Bound to what was shown.** An approval names the content hash of the release it
  approves (artifact, config, plan); one given to different content counts for nothing. A
  newer deploy replaces a pending one rather than inheriting its approvals.
* **It expires.** A request nobody answered within ``expires`` is cancelled, and so is an
  approval older than that: yesterday's "yes" is not today's.
* **One "no" is enough.** A rejection by anyone allowed to approve ends the request.
* **A wait timer** (``wait_timer``) may hold an approved release a little longer (time to
  announce it, or to cancel it).

Everything here is a pure function of the requirement, the votes and ``now``; who may vote
at all is authorization's question (``application/access.py``) and is settled before a vote
is recorded.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Verdict = Literal["waiting", "approved", "rejected", "expired"]
VOTE_KINDS = ("approval.approved", "approval.rejected")
"""The ledger events that are votes (details: ``content``, ``comment``, ``page``)."""


@dataclass(frozen=True)
class ApprovalRule:
    """What an environment asks of a release before it runs there."""

    required: int = 1
    reviewers: tuple[str, ...] = ()  # "group:sre", "user:dana"; empty: anyone allowed to approve
    prevent_self_review: bool = True
    wait_timer: float = 0.0
    expires: float = 24 * 3600.0

    def to_json(self) -> dict[str, Any]:
        return {
            "required": self.required,
            "reviewers": list(self.reviewers),
            "prevent_self_review": self.prevent_self_review,
            "wait_timer": self.wait_timer,
            "expires": self.expires,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ApprovalRule:
        return cls(
            required=int(data.get("required", 1)),
            reviewers=tuple(data.get("reviewers", ())),
            prevent_self_review=bool(data.get("prevent_self_review", True)),
            wait_timer=float(data.get("wait_timer", 0.0)),
            expires=float(data.get("expires", 24 * 3600.0)),
        )


@dataclass(frozen=True)
class Vote:
    """One person's answer to one request: approve or reject, about one content hash."""

    identity: str
    approve: bool
    content: str
    at: float
    comment: str = ""


@dataclass(frozen=True)
class ApprovalState:
    verdict: Verdict
    approvals: tuple[str, ...] = ()  # identities whose approval counts
    missing: int = 0
    start_at: float | None = None  # approved: when the wait timer lets it start
    message: str = ""
    ignored: tuple[str, ...] = field(default=(), compare=False)  # why some votes did not count


def authors_of(actor: str, commit_authors: Iterable[str]) -> frozenset[str]:
    """Identities that count as the release's authors, normalised for comparison.

    The deploy's actor, and each commit author by email and by the email's local part, so
    ``dana@laptop`` (a token name) matches ``Dana <dana@example.com>`` (a git author).
    """
    names = {actor.lower(), actor.lower().split("@", 1)[0]}
    for author in commit_authors:
        email = author.rsplit("<", 1)[-1].rstrip(">").strip().lower()
        if email:
            names.update({email, email.split("@", 1)[0]})
    return frozenset(n for n in names if n)


def is_author(identity: str, authors: frozenset[str]) -> bool:
    lowered = identity.lower()
    return lowered in authors or lowered.split("@", 1)[0] in authors


def assess(
    rule: ApprovalRule,
    votes: Sequence[Vote],
    *,
    content: str,
    requested_at: float,
    authors: frozenset[str],
    now: float,
) -> ApprovalState:
    """Where a request stands: waiting, approved (and from when), rejected or expired."""
    ignored: list[str] = []
    counted: dict[str, Vote] = {}
    for vote in sorted(votes, key=lambda v: v.at):
        if vote.content != content:
            ignored.append(f"{vote.identity}: for other content")
            continue
        if rule.prevent_self_review and is_author(vote.identity, authors):
            ignored.append(f"{vote.identity}: an author of the change")
            continue
        if now - vote.at >= rule.expires:
            ignored.append(f"{vote.identity}: expired")
            continue
        if not vote.approve:
            why = f": {vote.comment}" if vote.comment else ""
            return ApprovalState(
                "rejected", message=f"rejected by {vote.identity}{why}", ignored=tuple(ignored)
            )
        counted.setdefault(vote.identity, vote)
    approvals = tuple(counted)
    if len(approvals) >= rule.required:
        decisive = sorted(v.at for v in counted.values())[rule.required - 1]
        start_at = decisive + rule.wait_timer
        who = ", ".join(approvals)
        if now < start_at:
            message = f"approved by {who}; starts after the wait timer ({start_at - now:.0f}s)"
        else:
            message = f"approved by {who}"
        return ApprovalState("approved", approvals, 0, start_at, message, tuple(ignored))
    if now - requested_at >= rule.expires:
        return ApprovalState(
            "expired",
            approvals,
            rule.required - len(approvals),
            message=f"nobody approved it within {rule.expires / 3600:g}h",
            ignored=tuple(ignored),
        )
    missing = rule.required - len(approvals)
    from_whom = f" from {', '.join(rule.reviewers)}" if rule.reviewers else ""
    return ApprovalState(
        "waiting",
        approvals,
        missing,
        message=f"waiting for {missing} approval(s){from_whom}",
        ignored=tuple(ignored),
    )
