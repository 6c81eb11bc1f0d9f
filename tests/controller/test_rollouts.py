"""Deploys and rollbacks through the real stack, under real HTTP load.

Each test counts what users saw through the stable address: a healthy rollout or a rollback
must cost zero failed requests; a bad version must be rolled back with the right reason on
the ledger and the evidence that triggered it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from conveyor.application import Caller
from conveyor.errors import Conflict
from conveyor.load.generator import LoadGenerator

from .harness import run, stack

pytestmark = pytest.mark.integration

RATE = 300  # requests per second on loopback, across 8 keep-alive connections


def test_rolling_deploy_under_load_fails_no_request(tmp_path: Path, database_url: str) -> None:
    async def scenario() -> None:
        async with stack(tmp_path, database_url) as s:
            r1 = await s.wait(await s.deploy("staging", await s.build("v1")))
            assert r1.phase == "succeeded"
            load = LoadGenerator("127.0.0.1", s.port("staging"), rate=RATE, connections=8)
            await load.start()
            await asyncio.sleep(0.5)
            r2 = await s.wait(await s.deploy("staging", await s.build("v2")))
            await asyncio.sleep(0.5)
            report = await load.stop()
            assert r2.phase == "succeeded", r2.status
            assert report.failed == 0, report.errors
            assert report.sent > RATE  # load really flowed during the rollout
            assert set(report.by_version) == {"1", "2"}
            kinds = s.kinds(r2)
            assert kinds[0] == "release.created" and kinds.count("release.created") == 1
            created = s.store.events(release_id=r2.id)[0].details
            assert created["exit"]["stable_revision"] == 1 and created["revision"] == 2
            for kind in (
                "rollout.started",
                "instances.started",
                "instance.ready",
                "instances.stopped",
                "traffic.switched",
                "verification.passed",
                "release.succeeded",
            ):
                assert kind in kinds
            running = s.instances("staging")
            assert len(running) == 2 and {i.revision for i in running} == {2}

    run(scenario())


def test_blue_green_switch_and_rollback_fail_no_request(tmp_path: Path, database_url: str) -> None:
    async def scenario() -> None:
        async with stack(tmp_path, database_url) as s:
            v1 = await s.build("v1")
            await s.wait(await s.deploy("production", v1))
            load = LoadGenerator("127.0.0.1", s.port("production"), rate=RATE, connections=8)
            await load.start()
            r2 = await s.wait(await s.deploy("production", await s.build("v2")))
            assert r2.phase == "succeeded"
            # Old version is still warm: a rollback now is only a traffic switch.
            assert {i.revision for i in s.instances("production")} == {1, 2}
            r3 = await s.app.rollback(Caller("test"), "catalog", "production", None)
            assert r3.rollback_of == 1 and r3.artifact_digest == v1
            r3 = await s.wait(r3)
            await asyncio.sleep(0.3)
            report = await load.stop()
            assert r3.phase == "succeeded"
            assert report.failed == 0, report.errors
            # The warm r1 instances served the rollback; nothing new was started for it.
            started = [e for e in s.store.events(release_id=r3.id) if e.kind == "instances.started"]
            assert started == []

    run(scenario())


@pytest.mark.parametrize(
    ("env", "fault", "reason"),
    [
        ("staging", {"FAULT_READINESS": "fail"}, "progress-deadline"),
        ("staging", {"FAULT_CRASH_AFTER": "0.5"}, "crash-loop"),
        ("production", {"FAULT_ERROR_RATE": "0.5"}, "error-rate"),
        ("production", {"FAULT_CRASH_AFTER": "1"}, "crash-loop"),
    ],
    ids=["readiness", "crash-rolling", "errors-blue-green", "crash-blue-green"],
)
def test_each_fault_rolls_back_with_its_reason(
    tmp_path: Path, database_url: str, env: str, fault: dict[str, str], reason: str
) -> None:
    # Staging rolls: a new instance must stay ready 2 s before an old one goes, longer than
    # the crashing version lives, so the old instances are still there to roll back to.
    rolling = "{max_surge: 1, max_unavailable: 0, min_ready: 2s}"

    async def scenario() -> None:
        async with stack(
            tmp_path, database_url, deadline="4s", verification="6s", rolling=rolling
        ) as s:
            await s.wait(await s.deploy(env, await s.build("v1")))
            load = LoadGenerator("127.0.0.1", s.port(env), rate=200, connections=4)
            await load.start()
            bad = await s.wait(
                await s.deploy(env, await s.build("v2"), overrides=fault), timeout=60
            )
            await asyncio.sleep(0.3)
            report = await load.stop()
            assert bad.phase == "rolled_back", bad.status
            assert bad.status.abort.reason == reason
            failed = [e for e in s.store.events(release_id=bad.id) if e.kind == "release.aborted"]
            assert failed and failed[0].details["reason"] == reason
            assert failed[0].details["evidence"] or reason == "manual"
            assert "release.rolled_back" in s.kinds(bad)
            assert {i.revision for i in s.instances(env)} == {1}
            if reason != "error-rate":
                # Crashes and unready instances never reached users: the router retried or
                # never routed to them.
                assert report.failed == 0, report.errors

    run(scenario())


def test_deploy_refused_while_rollout_in_progress(tmp_path: Path, database_url: str) -> None:
    async def scenario() -> None:
        async with stack(tmp_path, database_url) as s:
            await s.wait(await s.deploy("staging", await s.build("v1")))
            await s.deploy("staging", await s.build("v2"))
            with pytest.raises(Conflict, match="still rolling out"):
                await s.deploy("staging", await s.build("v3"))

    run(scenario())


def test_manual_rollback_during_rollout_aborts_it(tmp_path: Path, database_url: str) -> None:
    async def scenario() -> None:
        async with stack(tmp_path, database_url, verification="6s") as s:
            await s.wait(await s.deploy("production", await s.build("v1")))
            r2 = await s.deploy("production", await s.build("v2"))
            deadline = asyncio.get_running_loop().time() + 20
            while s.store.get_release(r2.id).phase != "verifying":
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.05)
            aborted = await s.app.rollback(Caller("alice"), "catalog", "production", None)
            assert aborted.id == r2.id and aborted.phase == "rolling_back"
            final = await s.wait(r2)
            assert final.phase == "rolled_back"
            assert final.status.abort.reason == "manual"
            assert final.status.abort.actor == "alice"
            assert {i.revision for i in s.instances("production")} == {1}

    run(scenario())


def test_same_artifact_and_config_is_refused(tmp_path: Path, database_url: str) -> None:
    async def scenario() -> None:
        async with stack(tmp_path, database_url) as s:
            v1 = await s.build("v1")
            await s.wait(await s.deploy("dev", v1))
            with pytest.raises(Conflict, match="already runs"):
                await s.deploy("dev", v1)
            # A config change is a release of its own, with the same bytes.
            r2 = await s.wait(await s.deploy("dev", v1, overrides={"GREETING": "hi"}))
            assert r2.phase == "succeeded" and r2.artifact_digest == v1
            assert r2.config["GREETING"] == "hi" and r2.config_version != "x"

    run(scenario())


def test_ledger_chain_verifies_after_a_rollout(tmp_path: Path, database_url: str) -> None:
    async def scenario() -> None:
        async with stack(tmp_path, database_url) as s:
            await s.wait(await s.deploy("dev", await s.build("v1")))
            check = s.store.verify_ledger()
            assert check.ok and check.checked > 5

    run(scenario())
