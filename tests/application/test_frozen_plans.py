"""A release is judged by the plan it was created with, whatever conveyor.yaml says later.

Through the real stack: a canary keeps its analysis template, its triggers and its
notifications when the file is edited under it; a broken file is reported (status, ledger)
and refuses new deploys while rollbacks still work; pause and resume show in `status` at
once; one codebase built as two services is one artifact whose gate results stay apart.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path

import pytest

from conveyor.application import Caller
from conveyor.artifacts.attestations import JobVerdict, RunFacts
from conveyor.config.loader import load_project
from conveyor.errors import ConfigError, Refused
from conveyor.load.generator import LoadGenerator
from conveyor.server.stack import build_stack

from ..controller.harness import EXAMPLES, Stack, push_build, run, stack

pytestmark = pytest.mark.integration

STEPS = "[{set_weight: 30}, {pause: {}}, {analysis: errors}, {pause: {}}]"


async def _until(s: Stack, release_id: int, predicate, timeout: float = 30) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate(s.store.get_release(release_id)):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never met: {s.store.get_release(release_id).status}")


async def _hook_server(received: list[dict[str, object]]) -> tuple[asyncio.Server, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:] if h)}
        received.append(json.loads(await reader.readexactly(int(headers["content-length"]))))
        writer.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def test_an_edited_config_does_not_change_a_canary_in_progress(
    tmp_path: Path, database_url: str
) -> None:
    received: list[dict[str, object]] = []

    async def scenario() -> None:
        server, port = await _hook_server(received)
        notify = (
            f"notify:\n  - webhook: http://127.0.0.1:{port}/hook\n    events: [step.completed]\n"
        )
        try:
            async with stack(tmp_path, database_url, canary_steps=STEPS, notify=notify) as s:
                await s.wait(await s.deploy("canary", await s.build("v1")))
                load = LoadGenerator("127.0.0.1", s.port("canary"), rate=250, connections=4)
                await load.start()
                r2 = await s.deploy("canary", await s.build("v2"))
                await _until(s, r2.id, lambda r: r.status.paused and r.status.step_index == 1)

                # Someone edits the file mid-canary: a template that fails every canary, a
                # looser trigger, no notifications. None of it may touch r2.
                config = tmp_path / "conveyor.yaml"
                text = config.read_text()
                edited = text.replace(
                    'failure_condition: "result > 0.05"', 'failure_condition: "result >= 0"'
                )
                edited = edited.replace("rollback: {error_rate: 5%}", "rollback: {error_rate: 90%}")
                edited = edited[edited.index("analysis:\n") :]  # drops the notify block
                config.write_text("project: shoptest\n" + edited)
                assert load_project(config).config.notify == []
                received.clear()

                await s.app.control(Caller("alice"), "catalog", "canary", "promote")
                await _until(s, r2.id, lambda r: r.status.step_index == 3, timeout=40)
                held = s.store.get_release(r2.id)
                assert held.phase == "progressing", held.status
                assert held.analysis["step-2"]["phase"] == "successful"  # the frozen template
                assert held.plan.triggers.error_rate == pytest.approx(0.05)
                await s.app.control(Caller("alice"), "catalog", "canary", "promote")
                final = await s.wait(r2)
                report = await load.stop()
                assert final.phase == "succeeded", final.status
                assert report.failed == 0
                for _ in range(100):
                    if len(received) >= 3:
                        break
                    await asyncio.sleep(0.05)
                # The frozen notify target heard every step completed after the edit.
                assert [n["kind"] for n in received].count("step.completed") >= 3

                # The next release reads the edited file: it has no notifications.
                r3 = await s.deploy("canary", await s.build("v3"))
                assert r3.plan.notify == ()
                failing = r3.plan.analysis["errors"].metrics[0]
                assert failing.failure_condition == "result >= 0"
        finally:
            server.close()
            await server.wait_closed()

    run(scenario())


def test_a_broken_config_is_reported_refuses_deploys_and_rollback_still_works(
    tmp_path: Path, database_url: str
) -> None:
    async def scenario() -> None:
        async with stack(tmp_path, database_url, instances=1) as s:
            r1 = await s.wait(await s.deploy("staging", await s.build("v1")))
            v2 = await s.build("v2")
            await s.wait(await s.deploy("staging", v2))
            config = tmp_path / "conveyor.yaml"
            good = config.read_text()
            config.write_text(good.replace("instances: 1", "instances: many"))

            state = s.app.config_state(Caller("t"))
            assert not state.ok and state.problems[0].field.endswith("instances")
            with pytest.raises(ConfigError):
                await s.deploy("staging", v2)
            back = await s.app.rollback(Caller("bob"), "catalog", "staging", r1.revision)
            assert (await s.wait(back)).phase == "succeeded"
            assert back.plan.artifact == r1.plan.artifact

            config.write_text(good)
            assert s.app.config_state(Caller("t")).ok
            kinds = [e.kind for e in s.store.events() if e.kind.startswith("config.")]
            assert kinds == ["config.invalid", "config.valid"]

    run(scenario())


def test_pause_and_resume_show_in_status_at_once(tmp_path: Path, database_url: str) -> None:
    async def scenario() -> None:
        steps = "[{set_weight: 20}, {pause: 30s}, {set_weight: 100}]"
        async with stack(tmp_path, database_url, instances=1, canary_steps=steps) as s:
            await s.wait(await s.deploy("canary", await s.build("v1")))
            r2 = await s.deploy("canary", await s.build("v2"))
            await _until(s, r2.id, lambda r: r.status.step_index == 1)

            paused = await s.app.control(Caller("alice"), "catalog", "canary", "pause")
            assert paused.status.paused == "paused by alice"
            [row] = s.app.status(Caller("t"), "canary")
            assert row.paused == "paused by alice" and "paused by alice" in row.message

            resumed = await s.app.control(Caller("alice"), "catalog", "canary", "resume")
            assert resumed.status.paused is None
            [row] = s.app.status(Caller("t"), "canary")
            assert row.paused is None and "paused" not in row.message, row.message

            promoted = await s.app.control(Caller("alice"), "catalog", "canary", "promote")
            # The answer shows the step the promotion moved to, not the one it was given at.
            assert promoted.status.step_index >= 2, promoted.status

    run(scenario())


TWO_SERVICES = """\
project: twins
services:
  web:
    path: app
    build: {run: "true", outputs: [app, VERSION]}
    run: "exec python3 app/server.py"
    health: {readiness: {path: /health/ready, period: 0.2s}}
  worker:
    path: app
    build: {run: "true", outputs: [app, VERSION]}
    run: "exec python3 app/server.py"
    health: {readiness: {path: /health/ready, period: 0.2s}}
environments:
  dev:
    strategy: recreate
    progress_deadline: 8s
  production:
    strategy: recreate
    progress_deadline: 8s
    requires: {gates: [scan]}
"""


def test_one_codebase_as_two_services_is_one_artifact_with_separate_gates(
    tmp_path: Path, database_url: str
) -> None:
    async def scenario() -> None:
        shutil.copytree(EXAMPLES / "catalog", tmp_path / "app")
        config = tmp_path / "conveyor.yaml"
        config.write_text(TWO_SERVICES)
        project = load_project(config)
        parts = build_stack(config, database_url=database_url)
        await parts.start()
        try:
            app = parts.app
            web = await push_build(app, tmp_path, project, "web")
            worker = await push_build(app, tmp_path, project, "worker")
            assert web == worker
            record = parts.store.get_artifact(web)
            assert record.services == ("web", "worker")
            for service in ("web", "worker"):
                release = await app.deploy(Caller("test"), service, "dev", web)
                assert release.plan.service == service

            facts = {
                "run": "r1",
                "pipeline": "ci",
                "branch": "main",
                "commit": None,
                "jobs": [{"name": "scan", "result": "success"}],
            }
            app.attest(Caller("ci"), "web", web, facts)
            await app.deploy(Caller("test"), "web", "production", web)
            with pytest.raises(Refused) as refused:
                await app.deploy(Caller("test"), "worker", "production", web)
            assert "gate 'scan' has no passing result" in refused.value.message
        finally:
            await parts.close(stop_instances=True)

    run(scenario())


def test_run_facts_type_is_the_attested_shape() -> None:
    """The API's attestation body is RunFacts as JSON: keep the two in step."""
    fields = set(RunFacts.__dataclass_fields__) - {"recorded"}
    assert fields == {"run", "pipeline", "branch", "tag", "commit", "jobs"}
    assert set(JobVerdict.__dataclass_fields__) == {"name", "result", "reason", "gate", "summary"}
