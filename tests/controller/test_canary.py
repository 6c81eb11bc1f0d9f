"""Canary rollouts through the real stack: weights observed by users, holds, aborts."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path

import pytest

from conveyor.application import Caller
from conveyor.core.state import RolloutStatus
from conveyor.load.generator import LoadGenerator
from conveyor.notify.webhook import signature

from .harness import Stack, run, stack

pytestmark = pytest.mark.integration


async def _until(s: Stack, release_id: int, predicate, timeout: float = 30) -> RolloutStatus:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = s.store.get_release(release_id)
        if predicate(current):
            return current.status
        await asyncio.sleep(0.05)
    raise AssertionError(f"condition never met: {s.store.get_release(release_id).status}")


def test_canary_walks_its_steps_holds_for_a_human_and_promotes(
    tmp_path: Path, database_url: str
) -> None:
    async def scenario() -> None:
        async with stack(tmp_path, database_url, instances=2, verification="2s") as s:
            await s.wait(await s.deploy("canary", await s.build("v1")))
            load = LoadGenerator("127.0.0.1", s.port("canary"), rate=200, connections=4)
            await load.start()
            r2 = await s.deploy("canary", await s.build("v2"))
            # The indefinite pause holds the rollout at 50% until a human promotes it.
            status = await _until(s, r2.id, lambda r: r.status.paused)
            assert status.step_index == 3
            mark = load.snapshot()
            await asyncio.sleep(2.0)
            share = load.versions_since(mark)
            canary_share = share.get("2", 0) / max(1, sum(share.values()))
            assert 0.35 < canary_share < 0.65, share
            assert s.store.get_release(r2.id).phase == "progressing"
            await s.app.control(Caller("alice"), "catalog", "canary", "promote")
            final = await s.wait(r2)
            report = await load.stop()
            assert final.phase == "succeeded"
            assert report.failed == 0, report.errors
            kinds = s.kinds(r2)
            assert kinds.count("step.completed") == 4
            assert "rollout.paused" in kinds and "rollout.promote" in kinds
            promoted = [e for e in s.store.events(release_id=r2.id) if e.kind == "rollout.promote"]
            assert promoted[0].actor == "alice"

    run(scenario())


def test_bad_canary_is_aborted_at_its_first_weight_with_few_users_hurt(
    tmp_path: Path, database_url: str
) -> None:
    async def scenario() -> None:
        steps = "[{set_weight: 10}, {pause: 30s}, {set_weight: 50}]"
        async with stack(tmp_path, database_url, canary_steps=steps) as s:
            await s.wait(await s.deploy("canary", await s.build("v1")))
            load = LoadGenerator("127.0.0.1", s.port("canary"), rate=200, connections=4)
            await load.start()
            bad = await s.wait(
                await s.deploy("canary", await s.build("v2"), overrides={"FAULT_ERROR_RATE": "0.5"})
            )
            await asyncio.sleep(0.3)
            report = await load.stop()
            assert bad.phase == "rolled_back"
            assert bad.status.abort.reason == "error-rate"
            assert bad.status.step_index <= 1  # never reached the 50% step
            assert {i.revision for i in s.instances("canary")} == {1}
            # At most ~10% of users met the canary, half of those saw an error.
            assert report.failed / report.sent < 0.1

    run(scenario())


def test_manual_abort_and_retry(tmp_path: Path, database_url: str) -> None:
    async def scenario() -> None:
        async with stack(tmp_path, database_url, verification="1s") as s:
            await s.wait(await s.deploy("canary", await s.build("v1")))
            r2 = await s.deploy("canary", await s.build("v2"))
            await _until(s, r2.id, lambda r: r.status.paused)
            await s.app.control(Caller("bob"), "catalog", "canary", "abort")
            aborted = await s.wait(r2)
            assert aborted.phase == "rolled_back" and aborted.status.abort.actor == "bob"
            r3 = await s.app.control(Caller("bob"), "catalog", "canary", "retry")
            assert r3.artifact_digest == r2.artifact_digest and r3.reason == "retry of r2"
            await _until(s, r3.id, lambda r: r.status.paused)
            await s.app.control(Caller("bob"), "catalog", "canary", "promote_full")
            assert (await s.wait(r3)).phase == "succeeded"

    run(scenario())


ANALYSED = "[{set_weight: 30}, {analysis: errors}, {set_weight: 100}]"


@pytest.mark.parametrize(("fault", "expected"), [(None, "succeeded"), ("0.3", "rolled_back")])
def test_analysis_step_judges_the_canary_from_router_metrics(
    tmp_path: Path, database_url: str, fault: str | None, expected: str
) -> None:
    async def scenario() -> None:
        # The environment's own error-rate trigger is set high so the analysis decides.
        async with stack(
            tmp_path,
            database_url,
            canary_steps=ANALYSED,
            canary_error_rate="90%",
            verification="1s",
        ) as s:
            await s.wait(await s.deploy("canary", await s.build("v1")))
            load = LoadGenerator("127.0.0.1", s.port("canary"), rate=200, connections=4)
            await load.start()
            overrides = {"FAULT_ERROR_RATE": fault} if fault else None
            r2 = await s.wait(await s.deploy("canary", await s.build("v2"), overrides=overrides))
            await load.stop()
            assert r2.phase == expected, r2.status
            events = s.store.events(release_id=r2.id)
            measured = [e for e in events if e.kind == "analysis.measured"]
            assert measured, [e.kind for e in events]
            assert all("phase" in e.details and "evidence" in e.details for e in measured)
            if expected == "rolled_back":
                assert r2.status.abort.reason == "analysis-failed"
                assert r2.analysis["step-1"]["phase"] == "failed"
                assert {i.revision for i in s.instances("canary")} == {1}
            else:
                assert r2.analysis["step-1"]["phase"] == "successful"

    run(scenario())


def test_a_canary_without_traffic_is_held_not_judged(tmp_path: Path, database_url: str) -> None:
    async def scenario() -> None:
        async with stack(tmp_path, database_url, canary_steps=ANALYSED) as s:
            await s.wait(await s.deploy("canary", await s.build("v1")))
            r2 = await s.deploy("canary", await s.build("v2"))  # nobody calls the service
            status = await _until(s, r2.id, lambda r: r.status.paused, timeout=30)
            assert "inconclusive" in status.paused
            current = s.store.get_release(r2.id)
            assert current.phase == "progressing"  # held: neither passed nor failed
            kinds = s.kinds(r2)
            assert "analysis.inconclusive" in kinds
            await s.app.control(Caller("carol"), "catalog", "canary", "promote")
            assert (await s.wait(r2)).phase == "succeeded"

    run(scenario())


@pytest.mark.skipif(not shutil.which("haproxy"), reason="apt-get install haproxy")
def test_canary_through_haproxy_weights_abort_and_promotion(
    tmp_path: Path, database_url: str
) -> None:
    """The same canary on HAProxy: the split users see, an abort, a promotion, no failures."""

    async def scenario() -> None:
        async with stack(tmp_path, database_url, verification="1s") as s:
            await s.wait(await s.deploy("haproxy", await s.build("v1")))
            load = LoadGenerator("127.0.0.1", s.port("haproxy"), rate=200, connections=4)
            await load.start()
            r2 = await s.deploy("haproxy", await s.build("v2"))
            await _until(s, r2.id, lambda r: r.status.paused)
            mark = load.snapshot()
            await asyncio.sleep(3.0)
            seen = load.versions_since(mark)
            share = seen.get("2", 0) / max(1, sum(seen.values()))
            assert 0.10 < share < 0.30, seen  # set_weight: 20
            await s.app.control(Caller("dana"), "catalog", "haproxy", "abort")
            aborted = await s.wait(r2)
            assert aborted.phase == "rolled_back"
            mark = load.snapshot()
            await asyncio.sleep(1.0)
            assert set(load.versions_since(mark)) == {"1"}  # every user back on stable
            r3 = await s.app.control(Caller("dana"), "catalog", "haproxy", "retry")
            await _until(s, r3.id, lambda r: r.status.paused)
            await s.app.control(Caller("dana"), "catalog", "haproxy", "promote_full")
            assert (await s.wait(r3)).phase == "succeeded"
            mark = load.snapshot()
            await asyncio.sleep(1.0)
            report = await load.stop()
            assert set(load.versions_since(mark)) == {"3"}
            assert report.failed == 0, report.errors
            assert "conveyor_router_requests_total" in s.app.metrics(Caller("t"))

    run(scenario())


def test_a_held_canary_notifies_a_signed_webhook(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inconclusive never hangs silently: the hold reaches a human, signed."""
    received: list[tuple[dict[str, str], bytes]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:] if h)}
        body = await reader.readexactly(int(headers["content-length"]))
        received.append((headers, body))
        writer.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    async def scenario() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        monkeypatch.setenv("HOOK_SECRET", "s3cret")
        notify = (
            f"notify:\n  - webhook: http://127.0.0.1:{port}/hook\n"
            "    events: [analysis.inconclusive]\n    secret_env: HOOK_SECRET\n"
        )
        try:
            async with stack(tmp_path, database_url, canary_steps=ANALYSED, notify=notify) as s:
                await s.wait(await s.deploy("canary", await s.build("v1")))
                r2 = await s.deploy("canary", await s.build("v2"))
                await _until(s, r2.id, lambda r: r.status.paused, timeout=30)
                for _ in range(100):
                    if received:
                        break
                    await asyncio.sleep(0.05)
        finally:
            server.close()
            await server.wait_closed()
        [(headers, body)] = received
        assert headers["x-conveyor-signature"] == signature("s3cret", body)
        payload = json.loads(body)
        assert payload["kind"] == "analysis.inconclusive"
        assert payload["service"] == "catalog" and payload["revision"] == 2

    run(scenario())


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ({"FAULT_ERROR_RATE": "0.3"}, "error-rate"),
        ({"FAULT_LATENCY_MS": "150"}, "analysis-failed"),
        ({"FAULT_CRASH_AFTER": "1"}, "crash-loop"),
        ({"FAULT_READINESS": "fail"}, "progress-deadline"),
    ],
    ids=["5xx", "latency", "crash", "readiness"],
)
def test_each_fault_kind_aborts_the_canary_with_its_reason(
    tmp_path: Path, database_url: str, fault: dict[str, str], reason: str
) -> None:
    async def scenario() -> None:
        steps = "[{set_weight: 20}, {pause: 60s}, {set_weight: 100}]"
        async with stack(
            tmp_path,
            database_url,
            canary_steps=steps,
            # Latency has no built-in trigger: only analysis can catch it. The other kinds
            # run without it, so each is caught by its own trigger, not by a side effect.
            canary_background="latency" if reason == "analysis-failed" else None,
            deadline="8s",
        ) as s:
            await s.wait(await s.deploy("canary", await s.build("v1")))
            load = LoadGenerator("127.0.0.1", s.port("canary"), rate=150, connections=4)
            await load.start()
            bad = await s.wait(await s.deploy("canary", await s.build("v2"), overrides=fault))
            report = await load.stop()
            assert bad.phase == "rolled_back", bad.status
            assert bad.status.abort.reason == reason, bad.status.abort
            assert {i.revision for i in s.instances("canary")} == {1}
            # Only the canary's share of users could meet the fault.
            assert report.failed / max(1, report.sent) < 0.2

    run(scenario())
