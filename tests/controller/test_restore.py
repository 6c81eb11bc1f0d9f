"""`down` then `up` brings back what ran: the last succeeded release is kept at its size.

Through the real stack, twice on the same project and database: the first server deploys
and stops with its instances (what `conveyor down` does); the second one starts and users
are answered again without anyone deploying. Deploying the very same artifact while it is
short of instances restores it instead of refusing "nothing to deploy".
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from pathlib import Path

import pytest

from conveyor.application import Caller
from conveyor.server.stack import build_stack

from .harness import run, stack

pytestmark = pytest.mark.integration


def _answers(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
            return int(response.status)
    except OSError:
        return 0


async def _ready(parts, env: str, count: int, timeout: float = 30) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready = [i for i in parts.controller.observe("catalog", env) if i.ready]
        if len(ready) >= count:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{env}: fewer than {count} instances ready")


def test_up_after_down_restores_the_last_succeeded_release(
    tmp_path: Path, database_url: str
) -> None:
    async def scenario() -> None:
        async with stack(tmp_path, database_url, instances=2) as s:
            first = await s.wait(await s.deploy("staging", await s.build("v1")))
            digest = first.artifact_digest
            port = s.port("staging")
            assert await asyncio.to_thread(_answers, port) == 200
        # The stack closed with its instances stopped: `conveyor down`.
        assert await asyncio.to_thread(_answers, port) == 0

        parts = build_stack(tmp_path / "conveyor.yaml", database_url=database_url)
        await parts.start()
        try:
            await _ready(parts, "staging", 2)
            for _ in range(50):
                if await asyncio.to_thread(_answers, port) == 200:
                    break
                await asyncio.sleep(0.1)
            assert await asyncio.to_thread(_answers, port) == 200
            restored = [e for e in parts.store.events() if e.kind == "instances.restored"]
            assert restored and restored[0].details["present"] == 0
            assert restored[0].release_id == first.id
            assert len(parts.store.releases("catalog", "staging")) == 1  # nothing was deployed

            # Lose one instance: the same artifact deployed again restores, never refuses.
            victim = parts.controller.observe("catalog", "staging")[0]
            await parts.controller.target.stop(victim.instance_id)
            again = await parts.app.deploy(Caller("alice"), "catalog", "staging", digest)
            assert again.id == first.id
            kinds = [e.kind for e in parts.store.events(release_id=first.id)]
            assert "release.restoring" in kinds
            await _ready(parts, "staging", 2, timeout=40)
        finally:
            await parts.close(stop_instances=True)

    run(scenario())
