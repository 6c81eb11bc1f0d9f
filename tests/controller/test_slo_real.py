"""SLOs judged by the server on a real service answering errors, through the real router.

Requests are real (the example catalog service behind the built-in router, under load);
time between two evaluations is not: the monitor's clock advances a minute per evaluation,
so an hour of alerting happens in seconds. A release answering 30% errors burns a 99.9%
budget ~300x: the page fires on the next evaluation, the environment opted in to rolling
back on a page (``slo-burn``), users go back to the stable version, and the page clears
once the 30-minute window of the 6h/30m rule has no errors left. The budget is spent, so
``when_budget_exhausted: freeze`` refuses the next deploy and lets a rollback through.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from conveyor.application import Caller
from conveyor.config.loader import load_project
from conveyor.errors import Refused
from conveyor.load.generator import LoadGenerator
from conveyor.server.stack import build_stack

from .fakes import FakeGrafana
from .harness import Stack, run, write_project

pytestmark = pytest.mark.integration

PRODUCTION = (
    "when_budget_exhausted: freeze\n    rollback_on_page_burn: true\n"
    "    rollback: {error_rate: 99%}"
)


def test_a_burning_release_pages_rolls_back_clears_and_freezes(tmp_path: Path) -> None:
    hooks = FakeGrafana()  # here: a webhook receiver
    hooks.thread.start()

    async def scenario() -> None:
        config = write_project(
            tmp_path,
            verification="10s",
            env_fields={"production": PRODUCTION},
            notify=f"notify:\n  - {{webhook: {hooks.url}/hook}}\n",
        )
        text = config.read_text().replace(
            "    config: {GREETING: hello}\n",
            "    config: {GREETING: hello}\n    slos: [{name: availability, objective: 99.9%}]\n",
        )
        config.write_text(text)
        parts = build_stack(config, database_url=f"sqlite:///{tmp_path / 'state.db'}", tick=0.1)
        await parts.start()
        try:
            s = Stack(tmp_path, load_project(config), parts)
            assert parts._slos is not None
            parts._slos.cancel()  # this test drives the monitor with its own clock
            monitor = s.app.slos
            fake = [1_000_000.0]
            monitor.clock = lambda: fake[0]

            async def tick(real: float = 0.15) -> list[str]:
                await asyncio.sleep(real)
                fake[0] += 60
                return [f"{e.kind}:{e.details['severity']}" for e in await monitor.tick()]

            r1 = await s.wait(await s.deploy("production", await s.build("v1")))
            r2 = await s.wait(await s.deploy("production", await s.build("v2")))
            assert (r1.phase, r2.phase) == ("succeeded", "succeeded")
            load = LoadGenerator("127.0.0.1", s.port("production"), rate=200, connections=4)
            await load.start()
            try:
                for _ in range(3):
                    assert await tick() == []  # clean traffic burns nothing
                bad = await s.deploy("production", await s.build("v3"), {"FAULT_ERROR_RATE": "0.3"})
                while s.store.get_release(bad.id).status.weights.get(bad.template, 0) < 100:
                    await asyncio.sleep(0.05)
                fired: list[str] = []
                for _ in range(8):
                    fired += await tick(0.3)
                    if "slo.alert.fired:page" in fired:
                        break
                assert "slo.alert.fired:page" in fired
                final = await s.wait(bad)
                assert final.phase == "rolled_back"
                assert final.status.abort is not None
                assert final.status.abort.reason == "slo-burn"
                assert "SLO availability" in final.status.abort.message
                cleared: list[str] = []
                for _ in range(40):
                    cleared += await tick(0.05)
                    if "slo.alert.cleared:page" in cleared:
                        break
                assert "slo.alert.cleared:page" in cleared
            finally:
                await load.stop()
            [state] = s.app.slo_status(Caller("test"), "catalog", "production")
            assert state.budget.exhausted and state.budget.error_ratio is not None
            with pytest.raises(Refused, match="error budget of SLO availability is spent"):
                await s.deploy("production", await s.build("v4"))
            refused = [e for e in s.store.events(kinds=["release.refused"])]
            assert refused[-1].details["reason"] == "error budget exhausted"
            back = await s.app.rollback(Caller("alice"), "catalog", "production", None)
            assert back.rollback_of == r1.revision  # the way back stays open
            kinds = [e.kind for e in s.store.events(kinds=["slo.alert.fired", "slo.alert.cleared"])]
            assert kinds[0] == "slo.alert.fired"
        finally:
            await parts.close(stop_instances=True)

    try:
        run(scenario())
    finally:
        hooks.server.shutdown()
        hooks.server.server_close()
    # Deliveries are concurrent: the page and the ticket of one evaluation may arrive in
    # either order.
    sent = [body for _, body in hooks.posts("/hook") if body["kind"].startswith("slo.alert.")]
    [page] = [
        b for b in sent if b["kind"] == "slo.alert.fired" and b["details"]["severity"] == "page"
    ]
    assert page["service"] == "catalog" and page["env"] == "production"
    assert page["digest"].startswith("sha256:") and page["details"]["slo"] == "availability"
