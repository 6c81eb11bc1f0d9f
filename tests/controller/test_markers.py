"""Deployment markers from a real release: /metrics, Grafana annotations and webhooks.

``FakeGrafana`` is a fake: a tiny local HTTP server that records what it is sent and
answers as Grafana's annotations API does. It also stands in for a webhook receiver.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor.application import Caller

from .fakes import FakeGrafana
from .harness import run, stack

pytestmark = pytest.mark.integration


@pytest.fixture
def grafana() -> Iterator[FakeGrafana]:
    fake = FakeGrafana()
    fake.thread.start()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


def test_a_release_is_marked_everywhere(
    tmp_path: Path, grafana: FakeGrafana, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_GRAFANA_TOKEN", "glsa_test_token")
    notify = (
        f"notify:\n  - {{webhook: {grafana.url}/hook, "
        "events: [rollout.started, release.succeeded]}\n"
    )
    top = (
        f"markers:\n  grafana:\n    url: {grafana.url}\n    token_env: TEST_GRAFANA_TOKEN\n"
        "    tags: [conveyor, shop]\n"
    )

    async def scenario() -> tuple[Any, str]:
        async with stack(
            tmp_path, f"sqlite:///{tmp_path / 'state.db'}", notify=notify, top=top
        ) as s:
            r1 = await s.wait(await s.deploy("dev", await s.build("v1")))
            assert r1.phase == "succeeded"
            deadline = time.monotonic() + 10
            while len(grafana.posts("/api/annotations")) < 2 or len(grafana.posts("/hook")) < 2:
                assert time.monotonic() < deadline, grafana.seen
                await asyncio.sleep(0.05)
            # Settled, the environment's driver sleeps until something wakes it (scale).
            driver = s.controller.driver("catalog", "dev")
            while not driver._idle:
                assert time.monotonic() < deadline + 10
                await asyncio.sleep(0.05)
            return r1, s.app.metrics(Caller("test"))

    r1, metrics = run(scenario())
    annotations = grafana.posts("/api/annotations")
    headers, first = annotations[0]
    assert headers["authorization"] == "Bearer glsa_test_token"
    kinds = [body["tags"][-1] for _, body in annotations]
    assert kinds == ["rollout.started", "release.succeeded"]
    assert first["tags"][:4] == ["conveyor", "shop", "service:catalog", "env:dev"]
    assert first["text"].startswith(f"catalog rollout started in dev: r1 {r1.template}")
    assert abs(first["time"] / 1000 - r1.created_at) < 30
    [hook, _] = [body for _, body in grafana.posts("/hook")]
    assert hook["kind"] == "rollout.started"
    assert {k: hook[k] for k in ("service", "env", "version", "revision", "digest")} == {
        "service": "catalog",
        "env": "dev",
        "version": r1.template,
        "revision": 1,
        "digest": r1.artifact_digest,
    }
    assert "commit" in hook
    labels = f'service="catalog",env="dev",version="{r1.template}",revision="1"'
    info = f"conveyor_release_info{{{labels}}} 1"
    assert info in metrics
    assert 'event="started"' in metrics and 'event="finished",phase="succeeded"' in metrics
