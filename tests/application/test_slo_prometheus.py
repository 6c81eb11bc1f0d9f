"""An SLO with ``source: prometheus`` judged by the server against a real Prometheus.

Debian's Prometheus scrapes, every second, a small endpoint on 127.0.0.1 that renders the
built-in router's counters exactly as the router does (``VersionStats`` +
``render_prometheus``), for a service answering 100 requests a second: healthy, then half
of them failing (5xx answers and router failures), then healthy again. The SLO's bad and
total queries read those router metric names; the monitor is the one ``Application``
builds for the server (``build_stack``), querying Prometheus' HTTP API every evaluation.

The burn-rate windows (5m … 3d) are longer than the test, but every window holds the same
few seconds of samples, and a ratio of two ``rate()`` over one window is the ratio of the
increases whatever the window's length. So the objective (97%: page at 43.2% over 1h and
5m, or 18% over 6h and 30m) is chosen for the page to fire within seconds of 50% errors,
and to clear once the healthy requests after it dilute the errors below 18%.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from conveyor.application.slos import prometheus_number
from conveyor.core.slo import WINDOWS, window_name
from conveyor.core.slo_rules import SloSpec, ratio_expr
from conveyor.server.stack import build_stack
from conveyor.traffic.builtin.metrics import SeriesSnapshot, VersionStats, render_prometheus
from tests.analysis.support import JsonServer
from tests.controller.harness import run, write_project
from tests.e2e.prometheus_server import PrometheusServer, available, free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not available(), reason="needs /usr/bin/prometheus: apt-get install prometheus"
    ),
]

SELECTOR = 'service="catalog",env="production"'
BAD = (
    f'sum(rate(conveyor_router_responses_total{{{SELECTOR},code_class="5xx"}}[$window]))'
    f" + sum(rate(conveyor_router_proxy_errors_total{{{SELECTOR}}}[$window]))"
)
TOTAL = f"sum(rate(conveyor_router_requests_total{{{SELECTOR}}}[$window]))"


class RouterMetrics:
    """The router's /metrics for one version of catalog in production, at ``rate`` requests
    a second, of which ``failing`` fail (half 5xx answers, half router failures)."""

    def __init__(self, rate: float = 100.0) -> None:
        self.rate = rate
        self.failing = 0.0
        self.stats = VersionStats("v1")
        self.lock = threading.Lock()
        self.last = time.monotonic()
        self.served = 0.0  # fractional requests carried to the next scrape

    def set_failing(self, share: float) -> None:
        with self.lock:
            self._advance()
            self.failing = share

    def _advance(self) -> None:
        now = time.monotonic()
        self.served += (now - self.last) * self.rate
        self.last = now
        whole = int(self.served)
        self.served -= whole
        bad = round(whole * self.failing)
        for i in range(whole):
            if i < bad // 2:
                self.stats.fail(0.002)
            elif i < bad:
                self.stats.observe(500, 0.003)
            else:
                self.stats.observe(200, 0.003)

    def __call__(self, path: str) -> tuple[int, str, bytes]:
        if path != "/metrics":
            return 404, "text/plain", b"not found\n"
        with self.lock:
            self._advance()
            row = SeriesSnapshot("catalog", "production", "v1", self.stats.snapshot(), 0)
        return 200, "text/plain; version=0.0.4", render_prometheus([row]).encode()


def test_a_prometheus_slo_pages_on_a_real_burn_and_clears(tmp_path: Path) -> None:
    metrics = RouterMetrics()
    exporter = JsonServer(metrics)
    port = free_port()
    prometheus = PrometheusServer(tmp_path / "prometheus", [f"127.0.0.1:{exporter.port}"], port)
    slo = (
        "    slos:\n"
        "      - name: availability\n"
        "        objective: 97%\n"
        "        source: prometheus\n"
        "        prometheus:\n"
        f"          address: http://127.0.0.1:{port}\n"
        f"          bad: '{BAD}'\n"
        f"          total: '{TOTAL}'\n"
    )
    config = write_project(tmp_path / "project")
    text = config.read_text()
    config.write_text(
        text.replace("    config: {GREETING: hello}\n", "    config: {GREETING: hello}\n" + slo, 1)
    )
    parts = build_stack(config, database_url=f"sqlite:///{tmp_path / 'state.db'}")
    monitor = parts.app.slos  # as the server builds it; not started: the test ticks it

    async def until(change: str, timeout: float) -> list[str]:
        """Evaluate every 0.5 s until ``change`` (e.g. fired:page) is among the events."""
        seen: list[str] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen += [f"{e.kind}:{e.details['severity']}" for e in await monitor.tick()]
            if f"slo.alert.{change}" in seen:
                return seen
            await asyncio.sleep(0.5)
        raise AssertionError(f"no {change} within {timeout}s: {seen}; {monitor.status()}")

    async def scenario() -> None:
        # Healthy: every window has data (Prometheus answers 0, not nothing) and no alert.
        deadline = time.monotonic() + 15
        while True:
            assert await monitor.tick() == []
            [state] = monitor.status("catalog", "production")
            if all(state.burn[w] == 0.0 for w in WINDOWS):
                break
            assert time.monotonic() < deadline, f"no healthy data: {state.burn}"
            await asyncio.sleep(0.5)
        assert state.budget.error_ratio == 0.0 and not any(state.firing.values())
        for _ in range(2):
            await asyncio.sleep(0.5)
            assert await monitor.tick() == []

        metrics.set_failing(0.5)
        fired = await until("fired:page", timeout=15)
        [state] = monitor.status("catalog", "production")
        assert state.firing["page"]
        # One tick asks Prometheus window by window, and a scrape may land between two of
        # those queries; while errors go on, every window's burn climbs towards ~16x.
        deadline = time.monotonic() + 15
        while not all((r or 0.0) > 5.0 for r in state.burn.values()):
            assert time.monotonic() < deadline, state.burn
            await asyncio.sleep(0.5)
            fired += [f"{e.kind}:{e.details['severity']}" for e in await monitor.tick()]
            [state] = monitor.status("catalog", "production")
        assert state.firing["page"]
        assert state.budget.error_ratio is not None and state.budget.error_ratio > 0.03
        # The rules `conveyor slo rules` writes for a router SLO, on the same samples, agree.
        router = SloSpec("catalog", "production", "availability", 0.97, "availability")
        ratio = await prometheus_number(prometheus.url, ratio_expr(router, "5m"))
        assert ratio is not None and ratio > 0.18

        metrics.set_failing(0.0)
        cleared = await until("cleared:page", timeout=40)
        [state] = monitor.status("catalog", "production")
        assert not state.firing["page"]
        assert (state.burn[WINDOWS[0]] or 0.0) < 14.4, {
            window_name(w): r for w, r in state.burn.items()
        }

        events = parts.store.events(kinds=["slo.alert.fired", "slo.alert.cleared"])
        page = [e for e in events if e.details["severity"] == "page"]
        assert [e.kind for e in page] == ["slo.alert.fired", "slo.alert.cleared"]
        assert page[0].service == "catalog" and page[0].env == "production"
        assert page[0].details["rule"] is not None
        assert set(page[0].details["burn_rates"]) == {window_name(w) for w in WINDOWS}
        assert "slo.alert.fired:page" in fired and "slo.alert.cleared:page" in cleared

    try:
        prometheus.start()
        prometheus.wait_targets_up()
        run(asyncio.wait_for(scenario(), 90))
    finally:
        prometheus.stop()
        exporter.close()
        run(parts.close(stop_instances=True))
