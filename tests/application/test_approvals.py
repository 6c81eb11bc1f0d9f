"""People in the loop through the real stack: approvals, the emergency path, the access policy.

A release to an approval-gated environment waits; its author cannot approve it; someone
allowed to approves it and it runs; an approval given for other content counts for nothing
and a newer deploy replaces a waiting one; an unanswered request expires; rollbacks never
wait. The emergency path skips approval on the record and leaves a review open until
someone else signs it off. ``access:`` narrows tokens only once an admin applies it.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from conveyor.application import Caller
from conveyor.application.caller import Role
from conveyor.core.state import Phase
from conveyor.errors import Conflict, Forbidden, Refused

from ..controller.harness import Stack, run, stack

pytestmark = pytest.mark.integration

ALICE = Caller("alice", Role.DEPLOYER)
BOB = Caller("bob", Role.DEPLOYER)
DANA = Caller("dana", Role.DEPLOYER)
ADMIN = Caller("admin", Role.ADMIN)


async def _until(s: Stack, release_id: int, phase: Phase, timeout: float = 40) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if s.store.get_release(release_id).phase == phase:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never {phase}: {s.store.get_release(release_id).status}")


def gated(approval: str) -> dict[str, str]:
    return {"production": f"approval: {approval}"}


def test_a_release_waits_for_someone_else_and_runs_once_approved(
    tmp_path: Path, database_url: str
) -> None:
    async def scenario() -> None:
        fields = gated("{required: 1, from: [user:dana, user:alice]}")
        async with stack(tmp_path, database_url, instances=1, env_fields=fields) as s:
            first = await s.app.deploy(ALICE, "catalog", "production", await s.build("v1"))
            assert first.phase == Phase.PENDING_APPROVAL
            await asyncio.sleep(0.5)
            assert s.store.get_release(first.id).phase == Phase.PENDING_APPROVAL  # nothing ran
            assert s.instances("production") == []
            [(waiting, state)] = s.app.pending_approvals(BOB)
            assert waiting.id == first.id and state["missing"] == 1

            with pytest.raises(Refused, match="someone else's approval"):
                await s.app.vote(ALICE, first.id, approve=True)  # the author
            with pytest.raises(Forbidden, match="not among the reviewers"):
                await s.app.vote(BOB, first.id, approve=True)
            page = s.app.approval_page(DANA, first.id)
            approved = await s.app.vote(
                DANA,
                first.id,
                approve=True,
                comment="looked fine",
                content=page["release"]["content"],
                page_hash=page["page_hash"],
            )
            assert approved.phase != Phase.PENDING_APPROVAL
            done = await s.wait(approved)
            assert done.phase == Phase.SUCCEEDED
            kinds = s.kinds(done)
            assert kinds.index("approval.requested") < kinds.index("approval.approved")
            assert "release.approved" in kinds
            vote = next(
                e for e in s.store.events(release_id=first.id) if e.kind == "approval.approved"
            )
            assert vote.actor == "dana" and vote.details["page"] == page["page_hash"]

            # Rollbacks never wait for approval, nor does withdrawing a waiting request.
            second = await s.app.deploy(ALICE, "catalog", "production", await s.build("v2"))
            assert second.phase == Phase.PENDING_APPROVAL
            withdrawn = await s.app.rollback(ALICE, "catalog", "production", None)
            assert withdrawn.id == second.id and withdrawn.phase == Phase.CANCELLED

    run(scenario())


def test_approvals_are_bound_to_content_and_expire(tmp_path: Path, database_url: str) -> None:
    async def scenario() -> None:
        fields = gated("{required: 2, expires: 3s}")
        async with stack(tmp_path, database_url, instances=1, env_fields=fields) as s:
            v1 = await s.build("v1")
            first = await s.app.deploy(ALICE, "catalog", "production", v1)
            stale = first.plan.content_hash
            await s.app.vote(BOB, first.id, approve=True)
            await s.app.vote(BOB, first.id, approve=True)  # one person counts once
            assert s.store.get_release(first.id).phase == Phase.PENDING_APPROVAL

            # A newer deploy replaces the waiting one; what was approved does not carry over.
            second = await s.app.deploy(ALICE, "catalog", "production", v1, {"GREETING": "hi"})
            assert s.store.get_release(first.id).phase == Phase.CANCELLED
            with pytest.raises(Conflict, match="not what you were shown"):
                await s.app.vote(DANA, second.id, approve=True, content=stale)
            await s.app.vote(DANA, second.id, approve=True)
            assert s.store.get_release(second.id).phase == Phase.PENDING_APPROVAL  # 1 of 2

            await _until(s, second.id, Phase.CANCELLED, timeout=20)  # nobody else: expired
            assert "release.expired" in s.kinds(s.store.get_release(second.id))

    run(scenario())


def test_one_rejection_ends_the_request(tmp_path: Path, database_url: str) -> None:
    async def scenario() -> None:
        async with stack(tmp_path, database_url, instances=1, env_fields=gated("{}")) as s:
            release = await s.app.deploy(ALICE, "catalog", "production", await s.build("v1"))
            rejected = await s.app.vote(BOB, release.id, approve=False, comment="not today")
            assert rejected.phase == Phase.REJECTED
            assert "rejected by bob: not today" in rejected.status.message

    run(scenario())


def test_the_emergency_path_is_on_the_record_and_reviewed_by_someone_else(
    tmp_path: Path, database_url: str
) -> None:
    async def scenario() -> None:
        async with stack(tmp_path, database_url, instances=1, env_fields=gated("{}")) as s:
            v1 = await s.build("v1")
            with pytest.raises(Forbidden, match="emergency path"):
                await s.app.deploy(ALICE, "catalog", "production", v1, emergency="fire")
            release = await s.app.deploy(ADMIN, "catalog", "production", v1, emergency="site down")
            assert release.phase == Phase.PENDING  # no approval to wait for
            assert (await s.wait(release)).phase == Phase.SUCCEEDED
            kinds = s.kinds(release)
            assert "emergency.override" in kinds and "approval.requested" not in kinds
            assert s.app.approvals.open_reviews() == [release.id]
            with pytest.raises(Refused, match="cannot review it"):
                s.app.review(ADMIN, release.id, "I checked")
            s.app.review(BOB, release.id, "checked the diff and the graphs")
            assert s.app.approvals.open_reviews() == []

    run(scenario())


POLICY = """
access:
  groups: {sre: [dana], ci: [ci-shop]}
  environments:
    production: {deployer: [group:ci], approver: [group:sre], emergency: [group:sre]}
    "*": {deployer: [user:alice, group:ci]}
"""


def test_access_narrows_tokens_only_once_an_admin_applies_it(
    tmp_path: Path, database_url: str
) -> None:
    async def scenario() -> None:
        async with stack(tmp_path, database_url, instances=1, top=POLICY) as s:
            v1, v2 = await s.build("v1"), await s.build("v2")
            ci = Caller("ci-shop", Role.DEPLOYER)
            # Written, not applied: tokens alone decide.
            assert s.app.access(ADMIN)["pending"] is True
            await s.wait(await s.app.deploy(ALICE, "catalog", "production", v1))
            with pytest.raises(Forbidden):
                s.app.apply_access(ALICE)  # a deployer cannot put it in force
            applied = s.app.apply_access(ADMIN)
            assert applied["version"] > 0
            assert any(
                c.get("granted") == "dana" and c["role"] == "approver" for c in applied["changes"]
            )
            # Now: alice may deploy to staging but not production; ci may; dana approves.
            with pytest.raises(Forbidden, match="may not deploy to production") as refused:
                await s.app.deploy(ALICE, "catalog", "production", v2)
            assert refused.value.hint and "access policy in force" in refused.value.hint
            await s.app.deploy(ALICE, "catalog", "staging", v2)
            released = await s.app.deploy(ci, "catalog", "production", v2)
            assert released.plan.artifact == v2
            assert [e.kind for e in s.store.events() if e.kind == "access.applied"] == [
                "access.applied"
            ]

    run(scenario())


def test_a_token_acts_only_in_its_environments_and_no_access_block_means_tokens_alone(
    tmp_path: Path, database_url: str
) -> None:
    async def scenario() -> None:
        policy = POLICY.replace("approver: [group:sre]", "approver: [group:sre, user:erin]")
        fields = gated("{}")
        async with stack(tmp_path, database_url, instances=1, top=policy, env_fields=fields) as s:
            v1 = await s.build("v1")
            s.app.apply_access(ADMIN)
            ci = Caller("ci-shop", Role.DEPLOYER)
            release = await s.app.deploy(ci, "catalog", "production", v1)
            # erin is an approver by policy, but her token is scoped to staging only.
            erin = Caller("erin", Role.DEPLOYER, frozenset({"staging"}))
            with pytest.raises(Forbidden):
                await s.app.vote(erin, release.id, approve=True)
            # A viewer token is enough for someone the policy makes an approver.
            dana = Caller("dana", Role.VIEWER)
            assert (await s.app.vote(dana, release.id, approve=True)).phase != Phase.REJECTED

            # The file loses its access: block; applying it returns to tokens alone.
            config = tmp_path / "conveyor.yaml"
            config.write_text(config.read_text().replace(policy, ""))
            s.app.apply_access(ADMIN)
            assert s.app.policy.current().version == 0
            await s.app.deploy(ALICE, "catalog", "staging", v1)  # no policy: the token decides

    run(scenario())
