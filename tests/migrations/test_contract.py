"""No contract while old code runs: the pgshop sequence across two environments, for real.

Production ships the expand, then a second release of it (so the pre-expand release is
past its rollback horizon there); staging still runs the pre-expand release. The contract is
refused, naming staging's release; refused again while staging keeps it as a rollback
target; allowed once staging moved past it. Once the contract ran in production, a
rollback there to the pre-expand release is refused with the reason. And an expand is
undone on purpose only after production left the release built with it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.application.caller import Caller, Role
from conveyor.errors import Conflict, Forbidden, Refused
from tests.controller.harness import run

from .support import ADMIN, needs_postgres, shop

pytestmark = [pytest.mark.integration, pytest.mark.postgres, needs_postgres]


def test_a_contract_waits_until_no_environment_runs_or_keeps_the_pre_expand_release(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario() -> None:
        async with shop(tmp_path, monkeypatch) as s:
            v1 = await s.build()
            staging_r1 = await s.release("staging", v1)
            prod_r1 = await s.release("production", v1)
            s.step("2-expand")
            v2 = await s.build()
            assert (await s.release("production", v2)).phase == "succeeded"
            (s.stack.root / "services/orders/app/note.txt").write_text("same schema, new code\n")
            v2b = await s.build()
            prod_r3 = await s.release("production", v2b)
            assert prod_r3.phase == "succeeded"
            s.step("3-contract")
            v3 = await s.build()

            with pytest.raises(Refused) as refused:
                await s.deploy("production", v3)
            message = refused.value.message
            assert "the contract 0003_contract_drop_customer would break code" in message
            assert f"{staging_r1.name} runs there: built before 0002_expand_customer_email" in (
                message
            )
            assert prod_r1.name not in message  # past production's horizon (1 release)
            assert "rollback_horizon" in (refused.value.hint or "")
            [event] = s.stack.store.events(
                service="orders", env="production", kinds=["release.refused"]
            )
            assert event.details["held"] == [
                {
                    "release": staging_r1.name,
                    "why": "runs there",
                    "lacks": "0002_expand_customer_email",
                }
            ]

            # Staging moves to the expand: r1 is still its rollback target.
            assert (await s.release("staging", v2)).phase == "succeeded"
            with pytest.raises(Refused) as still:
                await s.deploy("production", v3)
            assert f"{staging_r1.name} is a rollback target there" in still.value.message

            # Once more on staging: r1 leaves the horizon, and the contract may run.
            assert (await s.release("staging", v2b)).phase == "succeeded"
            prod_r4 = await s.release("production", v3)
            assert prod_r4.phase == "succeeded", prod_r4.status
            assert "customer" not in s.columns() and "customer_email" in s.columns()
            [contracted] = s.events(prod_r4, "schema.contracted")
            assert contracted.details["contracts"] == ["0003_contract_drop_customer"]
            unsafe = {r["name"] for r in contracted.details["no_longer_safe"]}
            assert unsafe == {prod_r1.name}

            # Evidence and the approval page show the migrations, their class, lint and undo.
            for shown in (
                s.stack.app.evidence(ADMIN, prod_r4.name)["migrations"],
                s.stack.app.approval_page(ADMIN, prod_r4.id)["migrations"],
            ):
                classes = {m["id"]: (m["class"], m["undo"]) for m in shown["migrations"]}
                assert classes["0002_expand_customer_email"] == (
                    "expand",
                    "migrations/0002_expand_customer_email.undo.sql",
                )
                assert classes["0003_contract_drop_customer"] == ("contract", None)
                [contract] = [m for m in shown["migrations"] if m["class"] == "contract"]
                assert contract["completes"] == ["0002_expand_customer_email"]
                assert {f["rule"] for f in contract["lint"]} >= {"ban-drop-column"}
                assert shown["lock_timeout"] == 5.0 and shown["runs"]

            # A rollback to the pre-expand release of production is refused, with the reason.
            with pytest.raises(Refused) as barred:
                await s.stack.app.rollback(ADMIN, "orders", "production", prod_r1.revision)
            assert "no longer safe to roll back to" in barred.value.message
            assert "ran the contract 0003_contract_drop_customer" in barred.value.message
            # `conveyor migrate status` says the same before anyone tries.
            status = s.stack.app.migration_status(ADMIN, "orders", "production")
            assert status["running"] == prod_r4.name
            states = {m["id"]: m["state"] for m in status["migrations"]}
            assert states["0003_contract_drop_customer"] == "contracted"
            assert states["0002_expand_customer_email"] == "applied"
            targets = {t["revision"]: t for t in status["rollback_targets"]}
            assert not targets[prod_r1.revision]["safe"]
            assert "0003_contract_drop_customer" in targets[prod_r1.revision]["why"]
            assert targets[prod_r3.revision]["safe"]
            # ... while one built with the expand is still a way back.
            back = await s.stack.app.rollback(ADMIN, "orders", "production", prod_r3.revision)
            back = await s.stack.wait(back)
            assert back.phase == "succeeded"
            assert s.events(back, "migration.started") == []  # a rollback never migrates

    run(scenario())


def test_an_expand_is_undone_on_purpose_only_once_no_release_built_with_it_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario() -> None:
        async with shop(tmp_path, monkeypatch) as s:
            r1 = await s.release("staging", await s.build())
            s.step("2-expand")
            r2 = await s.release("staging", await s.build())
            assert "customer_email" in s.columns()
            undo = s.stack.app.undo_migration
            with pytest.raises(Forbidden):
                await undo(
                    _deployer(), "orders", "staging", "0002_expand_customer_email", "cleanup"
                )
            with pytest.raises(Conflict) as running:
                await undo(ADMIN, "orders", "staging", "0002_expand_customer_email", "cleanup")
            assert f"{r2.name} runs in staging and was built with" in running.value.message

            back = await s.stack.wait(
                await s.stack.app.rollback(ADMIN, "orders", "staging", r1.revision)
            )
            assert back.phase == "succeeded"
            assert "customer_email" in s.columns()  # a rollback runs no down-migration
            done = await undo(
                ADMIN, "orders", "staging", "0002_expand_customer_email", "the feature was dropped"
            )
            assert done["ok"], done
            assert "undoing 0002_expand_customer_email" in done["output"]
            assert "customer_email" not in s.columns()
            assert {r["name"] for r in done["no_longer_safe"]} == {r2.name}
            [event] = s.stack.store.events(kinds=["migration.undone"])
            assert (
                event.actor == ADMIN.actor and event.details["reason"] == "the feature was dropped"
            )
            with pytest.raises(Refused) as barred:
                await s.stack.app.rollback(ADMIN, "orders", "staging", r2.revision)
            assert "was undone by admin@test" in barred.value.message
            status = s.stack.app.migration_status(ADMIN, "orders", "staging")
            assert status["undone"] == {"0002_expand_customer_email": ADMIN.actor}
            targets = {t["revision"]: t for t in status["rollback_targets"]}
            assert not targets[r2.revision]["safe"] and targets[r1.revision]["safe"]
            # A deploy migrates again: the expand is applied, and r2's code is fine again.
            again = await s.release("staging", r2.artifact_digest)
            assert again.phase == "succeeded" and "customer_email" in s.columns()
            status = s.stack.app.migration_status(ADMIN, "orders", "staging")
            assert status["undone"] == {}
            assert {m["id"]: m["state"] for m in status["migrations"]}[
                "0002_expand_customer_email"
            ] == "applied"
            assert all(t["safe"] for t in status["rollback_targets"])

    run(scenario())


def _deployer() -> Caller:
    return Caller("deployer@test", Role.DEPLOYER)
