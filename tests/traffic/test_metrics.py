"""Per-version accounting and its Prometheus rendering (pure; no sockets)."""

from __future__ import annotations

import math

from conveyor.core.model import VersionCounters
from conveyor.traffic.builtin.metrics import (
    LATENCY_BUCKETS,
    SeriesSnapshot,
    VersionStats,
    render_prometheus,
)


def test_observe_and_fail_feed_every_counter() -> None:
    stats = VersionStats("v1", sample_size=3)
    stats.observe(200, 0.001)
    stats.observe(204, 0.02)
    stats.observe(302, 0.3)
    stats.observe(404, 0.004)
    stats.observe(503, 20.0)
    stats.fail(0.5)
    snap = stats.snapshot()
    assert (snap.requests, snap.responses_2xx, snap.responses_3xx) == (6, 2, 1)
    assert (snap.responses_4xx, snap.responses_5xx, snap.proxy_errors) == (1, 1, 1)
    assert snap.errors == 2
    assert math.isclose(snap.latency_sum, 0.001 + 0.02 + 0.3 + 0.004 + 20.0 + 0.5)
    buckets = dict(snap.latency_buckets)
    assert buckets[0.005] == 2
    assert buckets[0.025] == 3
    assert buckets[0.5] == 5  # le is inclusive: 0.5 falls in the 0.5 bucket
    assert buckets[10.0] == 5
    assert buckets[math.inf] == 6
    assert [le for le, _ in snap.latency_buckets] == [*LATENCY_BUCKETS, math.inf]
    assert list(stats.samples) == [0.004, 20.0, 0.5]  # bounded reservoir keeps the latest


def test_status_beyond_599_counts_as_server_error() -> None:
    stats = VersionStats("v1")
    stats.observe(599, 0.0)
    stats.observe(999, 0.0)
    assert stats.snapshot().responses_5xx == 2


def test_snapshot_is_a_copy() -> None:
    stats = VersionStats("v1")
    stats.observe(200, 0.1)
    before = stats.snapshot()
    stats.observe(200, 0.1)
    assert before.requests == 1
    assert stats.snapshot().requests == 2


def test_prometheus_text_has_every_family_and_consistent_histograms() -> None:
    stats = VersionStats("v1")
    for latency in (0.003, 0.04, 0.2):
        stats.observe(200, latency)
    stats.observe(500, 1.5)
    text = render_prometheus(
        [
            SeriesSnapshot("shop", "prod", "v1", stats.snapshot(), 2),
            SeriesSnapshot('we"ird', "a\\b", "-", VersionCounters(proxy_errors=1, requests=1), 0),
        ]
    )
    lines = text.splitlines()
    labels = 'service="shop",env="prod",version="v1"'
    assert f"conveyor_router_requests_total{{{labels}}} 4" in lines
    assert f'conveyor_router_responses_total{{{labels},code_class="2xx"}} 3' in lines
    assert f'conveyor_router_responses_total{{{labels},code_class="5xx"}} 1' in lines
    assert f"conveyor_router_proxy_errors_total{{{labels}}} 0" in lines
    assert f'conveyor_router_request_duration_seconds_bucket{{{labels},le="0.005"}} 1' in lines
    assert f'conveyor_router_request_duration_seconds_bucket{{{labels},le="+Inf"}} 4' in lines
    assert f"conveyor_router_request_duration_seconds_count{{{labels}}} 4" in lines
    assert f"conveyor_router_in_flight{{{labels}}} 2" in lines
    assert (
        'conveyor_router_proxy_errors_total{service="we\\"ird",env="a\\\\b",version="-"} 1' in lines
    )
    for family, kind in (
        ("conveyor_router_requests_total", "counter"),
        ("conveyor_router_responses_total", "counter"),
        ("conveyor_router_proxy_errors_total", "counter"),
        ("conveyor_router_request_duration_seconds", "histogram"),
        ("conveyor_router_in_flight", "gauge"),
    ):
        assert f"# TYPE {family} {kind}" in lines
    # every sample line is "name{labels} value" with a numeric value
    for line in lines:
        if not line.startswith("#"):
            float(line.rsplit(" ", 1)[1])
    assert text.endswith("\n")


def test_prometheus_text_without_series_still_declares_families() -> None:
    text = render_prometheus([])
    assert "# TYPE conveyor_router_requests_total counter" in text
    assert "{" not in text
