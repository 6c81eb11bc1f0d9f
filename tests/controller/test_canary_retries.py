"""A bad canary hurts no GET, and is still rolled back: the real stack under load.

The example catalog service with a fault (5xx at 20% and 100%, dropped connections), the
real built-in router and controller, and users sending GETs at 150 req/s: no user request
may fail, while the error-rate trigger (or the analysis) still sees every canary failure
and rolls the canary back. POSTs are never retried, so their users meet the canary.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from conveyor.load.generator import LoadGenerator

from .harness import Stack, run, stack

pytestmark = pytest.mark.integration

HELD = "[{set_weight: %d}, {pause: 60s}, {set_weight: 100}]"


def _canary_counters(s: Stack, version: str):  # type: ignore[no-untyped-def]
    return s.controller.router_for("builtin").counters("catalog", "canary")[version]


@pytest.mark.parametrize(
    ("fault", "weight"),
    [
        ({"FAULT_ERROR_RATE": "0.2"}, 20),
        ({"FAULT_ERROR_RATE": "1"}, 10),
        ({"FAULT_DROP_RATE": "0.3"}, 20),
    ],
    ids=["5xx-20%", "5xx-100%", "drops-30%"],
)
def test_no_get_fails_and_the_error_trigger_still_rolls_the_canary_back(
    tmp_path: Path, database_url: str, fault: dict[str, str], weight: int
) -> None:
    async def scenario() -> None:
        async with stack(tmp_path, database_url, canary_steps=HELD % weight) as s:
            await s.wait(await s.deploy("canary", await s.build("v1")))
            gets = LoadGenerator("127.0.0.1", s.port("canary"), rate=150, connections=4)
            posts = LoadGenerator(
                "127.0.0.1", s.port("canary"), rate=50, connections=1, method="POST"
            )
            await gets.start()
            await posts.start()
            bad = await s.wait(await s.deploy("canary", await s.build("v2"), overrides=fault))
            await asyncio.sleep(0.3)
            got, posted = await gets.stop(), await posts.stop()
            assert bad.phase == "rolled_back", bad.status
            assert bad.status.abort.reason == "error-rate", bad.status.abort
            assert got.failed == 0, got.errors
            assert got.sent > 100
            # the judge saw every failure of the canary; each was either answered by
            # stable (a GET) or reached its user (a POST, never retried)
            seen = _canary_counters(s, bad.rollout_spec().version)
            assert seen.errors >= 3 and seen.retries_denied == 0
            assert seen.errors - seen.retried == posted.failed
            if fault.get("FAULT_ERROR_RATE") == "1":
                assert posted.failed > 0

    run(scenario())


def test_analysis_still_sees_the_failures_stable_answered(
    tmp_path: Path, database_url: str
) -> None:
    async def scenario() -> None:
        # The environment's own trigger is set high so that the analysis decides.
        async with stack(
            tmp_path,
            database_url,
            canary_steps="[{set_weight: 30}, {analysis: errors}, {set_weight: 100}]",
            canary_error_rate="90%",
        ) as s:
            await s.wait(await s.deploy("canary", await s.build("v1")))
            gets = LoadGenerator("127.0.0.1", s.port("canary"), rate=150, connections=4)
            await gets.start()
            overrides = {"FAULT_ERROR_RATE": "0.3"}
            bad = await s.wait(await s.deploy("canary", await s.build("v2"), overrides=overrides))
            got = await gets.stop()
            assert bad.phase == "rolled_back", bad.status
            assert bad.status.abort.reason == "analysis-failed"
            assert got.failed == 0, got.errors
            assert _canary_counters(s, bad.rollout_spec().version).retried > 10

    run(scenario())
