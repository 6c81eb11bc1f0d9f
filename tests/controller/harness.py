"""A real Conveyor stack in one event loop, for integration tests.

Real store (SQLite or PostgreSQL), real artifact store and builds, real child processes (the
example catalog service), the real built-in router and the real controller — only the
config is written by the test, with timings short enough to keep the suite fast.
"""

from __future__ import annotations

import asyncio
import shutil
import textwrap
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conveyor.application import Application, Caller
from conveyor.artifacts.build import build_archive
from conveyor.artifacts.signing import Keyring
from conveyor.artifacts.store import ArtifactStore
from conveyor.config.loader import LoadedProject, load_project
from conveyor.controller.controller import Controller
from conveyor.layout import Layout
from conveyor.server.stack import Stack as ServerStack
from conveyor.server.stack import build_stack
from conveyor.store.records import ReleaseRecord
from conveyor.store.repository import Store

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "shop" / "services"

CONFIG = """\
project: {project}
{notify}analysis:
  errors:
    metrics:
      - name: error-rate
        provider: builtin
        query: error_rate
        interval: 1s
        count: 3
        min_sample: 30
        failure_condition: "result > 0.05"
  latency:
    metrics:
      - name: p95-vs-stable
        provider: builtin
        query: compare_latency
        interval: 1s
        count: 30
        compare: {{quantile: 0.95, max_ratio: 1.5, min_samples: 30}}
  compare:
    metrics:
      - name: errors-vs-stable
        provider: builtin
        query: compare_error_rate
        interval: 1s
        count: 4
rollback:
  error_rate: 5%
  min_requests: 20
  window: 5s
  max_restarts: 2
  verification: {verification}
services:
  catalog:
    path: services/catalog
    build: {{run: "true", outputs: [app, VERSION]}}
    run: "exec python3 app/server.py"
    instances: {instances}
    health:
      readiness: {{path: /health/ready, timeout: 1s, period: 0.2s, failure_threshold: 2}}
      liveness: {{path: /health/live, timeout: 1s, period: 1s, failure_threshold: 3}}
    config: {{GREETING: hello}}
    stop: {{grace_period: 5s, drain_timeout: 10s}}
environments:
  staging:
    strategy: {{rolling: {rolling}}}
    progress_deadline: {deadline}
  production:
    strategy: {{blue_green: {{scale_down_delay: {scale_down_delay}}}}}
    progress_deadline: {deadline}
  dev:
    strategy: recreate
    progress_deadline: {deadline}
  canary:
    strategy:
      canary:
        steps: {canary_steps}
        scale_down_delay: {scale_down_delay}{canary_background}
    progress_deadline: {deadline}
    rollback: {{error_rate: {canary_error_rate}}}
  haproxy:
    router: haproxy
    strategy:
      canary:
        steps: [{{set_weight: 20}}, {{pause: {{}}}}]
        scale_down_delay: {scale_down_delay}
    progress_deadline: {deadline}
"""


def write_project(
    root: Path,
    *,
    instances: int = 2,
    verification: str = "2s",
    deadline: str = "8s",
    rolling: str = "{max_surge: 1, max_unavailable: 0}",
    scale_down_delay: str = "30s",
    project: str = "shoptest",
    canary_steps: str = "[{set_weight: 20}, {pause: 1s}, {set_weight: 50}, {pause: {}}]",
    canary_error_rate: str = "5%",
    notify: str = "",
    canary_background: str | None = None,
    requires: dict[str, str] | None = None,
    env_fields: dict[str, str] | None = None,
    top: str = "",
) -> Path:
    """Write the test project; ``requires`` maps an environment to its ``requires:`` YAML,
    ``env_fields`` to more fields (YAML lines, indented as fields of the environment), and
    ``top`` is YAML added at the top level."""
    shutil.copytree(
        EXAMPLES / "catalog",
        root / "services" / "catalog",
        ignore=shutil.ignore_patterns("__pycache__", ".mypy_cache", ".conveyor"),
    )
    path = root / "conveyor.yaml"
    text = CONFIG.format(
        project=project,
        canary_steps=canary_steps,
        canary_error_rate=canary_error_rate,
        notify=notify,
        canary_background=f"\n        analysis: {canary_background}" if canary_background else "",
        instances=instances,
        verification=verification,
        deadline=deadline,
        rolling=rolling,
        scale_down_delay=scale_down_delay,
    )
    for env, block in (requires or {}).items():
        text = text.replace(f"\n  {env}:\n", f"\n  {env}:\n    requires: {block}\n", 1)
    for env, lines in (env_fields or {}).items():
        text = text.replace(f"\n  {env}:\n", f"\n  {env}:\n    {lines}\n", 1)
    path.write_text(text + top)
    return path


@dataclass
class Stack:
    """The real stack of ``server/stack.py`` plus the shortcuts scenarios use."""

    root: Path
    project: LoadedProject
    parts: ServerStack

    @property
    def app(self) -> Application:
        return self.parts.app

    @property
    def store(self) -> Store:
        return self.parts.store

    @property
    def artifacts(self) -> ArtifactStore:
        return self.parts.artifacts

    @property
    def controller(self) -> Controller:
        return self.parts.controller

    @property
    def keyring(self) -> Keyring:
        return self.parts.keyring

    async def build(self, version: str = "v1", service: str = "catalog") -> str:
        """Build the example service the way `conveyor build` does: bytes, then record."""
        (self.root / "services" / "catalog" / "VERSION").write_text(version + "\n")
        return await push_build(self.app, self.root, self.project, service)

    async def deploy(
        self, env: str, artifact: str, overrides: dict[str, str] | None = None
    ) -> ReleaseRecord:
        return await self.app.deploy(Caller("test"), "catalog", env, artifact, overrides)

    async def wait(self, release: ReleaseRecord, timeout: float = 60) -> ReleaseRecord:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            current = self.store.get_release(release.id)
            if current.phase.terminal:
                return current
            await asyncio.sleep(0.05)
        raise AssertionError(f"{release.name} still {current.phase}: {current.status}")

    async def wait_done(self, release: ReleaseRecord, timeout: float = 60) -> ReleaseRecord:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            current = self.store.get_release(release.id)
            if current.done:
                return current
            await asyncio.sleep(0.05)
        raise AssertionError(f"{release.name} not done: {current.status}")

    def port(self, env: str) -> int:
        for address in self.store.addresses():
            if address.env == env and address.service == "catalog":
                return address.port
        raise AssertionError(f"no address for catalog in {env}")

    def instances(self, env: str) -> list[Any]:
        return self.controller.observe("catalog", env)

    def kinds(self, release: ReleaseRecord) -> list[str]:
        return [e.kind for e in self.store.events(release_id=release.id)]


async def push_build(app: Application, root: Path, project: LoadedProject, service: str) -> str:
    """Build ``service`` as `conveyor build` does (its own workspace), then hand the bytes and
    the facts to the application, as the API does."""
    spec = project.config.service(service)
    with build_archive(Layout(root), service, spec) as built:

        async def chunks() -> AsyncIterator[bytes]:
            yield built.path.read_bytes()

        await app.receive_blob(Caller("test"), built.digest, chunks(), limit=1 << 30)
        app.record_artifact(Caller("test"), service, built.digest, built.facts.to_json())
        return built.digest


@asynccontextmanager
async def stack(root: Path, database_url: str, **config: Any) -> AsyncIterator[Stack]:
    config_file = write_project(root, **config)
    parts = build_stack(config_file, database_url=database_url, tick=0.1)
    await parts.start()
    try:
        yield Stack(root, load_project(config_file), parts)
    finally:
        await parts.close(stop_instances=True)


def run(coro: Any) -> Any:
    """Tests are plain functions; each scenario runs on a fresh uvloop-free asyncio loop."""
    return asyncio.run(coro)


def indent(text: str) -> str:
    return textwrap.indent(text, "    ")
