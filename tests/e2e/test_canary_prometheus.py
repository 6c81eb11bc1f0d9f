"""A canary judged by a real Prometheus server scraping the real `conveyor server`.

The analysis template queries Prometheus (not the router directly) for the canary's 5xx
ratio, filtered by the ``version`` label the router exports — so this checks the whole chain a
user relies on: the exposition format is scrapable, the labels match what ``{{args.X}}``
expands to, the provider reads Prometheus' answer, and the verdict drives the rollout. The
canary environment's own error-rate trigger is set to 90% so only Prometheus can abort.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor.cli.demo import LoadThread
from tests.controller.harness import write_project

from .prometheus_server import PrometheusServer, available, free_port
from .server_process import ServerProcess, build, project_processes

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not available(), reason="apt-get install prometheus"),
]

STEPS = "[{set_weight: 30}, {analysis: prom-errors}, {set_weight: 100}]"

SELECTOR = 'service="{{args.service}}",env="{{args.env}}",version="{{args.canary_version}}"'


def _template(prometheus_port: int) -> str:
    """The `prom-errors` template: the canary's 5xx ratio over 15s, as Prometheus computes it.

    initial_delay lets Prometheus scrape the new version a few times before the first rate():
    an empty answer is "no data", which would hold the canary instead of judging it.
    """
    errors = "conveyor_router_responses_total{" + SELECTOR + ',code_class="5xx"}[15s]'
    requests = "conveyor_router_requests_total{" + SELECTOR + "}[15s]"
    return (
        "  prom-errors:\n"
        "    args: [service, env, canary_version]\n"
        "    metrics:\n"
        "      - name: canary-5xx-ratio\n"
        "        provider: prometheus\n"
        f'        address: "http://127.0.0.1:{prometheus_port}"\n'
        f"        query: 'sum(rate({errors})) / sum(rate({requests}))'\n"
        "        initial_delay: 4s\n"
        "        interval: 2s\n"
        "        count: 4\n"
        '        failure_condition: "result > 0.05"\n'
    )


def _write(root: Path, project: str, prometheus_port: int) -> None:
    config = write_project(
        root,
        instances=2,
        verification="1s",
        deadline="20s",
        scale_down_delay="1s",
        project=project,
        canary_steps=STEPS,
        canary_error_rate="90%",
    )
    text = config.read_text()
    assert text.count("\nanalysis:\n") == 1
    template = _template(prometheus_port)
    config.write_text(text.replace("\nanalysis:\n", "\nanalysis:\n" + template, 1))


def _wait_done(server: ServerProcess, release_id: int, timeout: float = 60) -> dict[str, Any]:
    """Until the release ended and its leftovers (old version, scale-down delay) are gone."""
    deadline = time.monotonic() + timeout
    release: dict[str, Any] = {}
    while time.monotonic() < deadline:
        release = server.get(f"/api/v1/releases/{release_id}")
        if release["phase"] in ("succeeded", "rolled_back", "failed") and release["done"]:
            return release
        time.sleep(0.2)
    raise AssertionError(
        f"release {release_id} did not finish: {release.get('phase')} {release.get('status')}"
        f"\n{server.log_tail()}"
    )


def _measured(server: ServerProcess, release_id: int) -> list[dict[str, Any]]:
    events = server.get("/api/v1/events", release=release_id)["events"]
    return [e["details"] for e in events if e["kind"] == "analysis.measured"]


def _answered_by(load: LoadThread, seconds: float) -> dict[str, int]:
    mark = load.snapshot()
    time.sleep(seconds)
    return load.generator.versions_since(mark)


def test_prometheus_analysis_promotes_a_good_canary_and_aborts_a_bad_one(tmp_path: Path) -> None:
    project = f"prom{uuid.uuid4().hex[:8]}"
    prometheus_port = free_port()
    _write(tmp_path, project, prometheus_port)
    server = ServerProcess(tmp_path)
    prometheus: PrometheusServer | None = None
    load: LoadThread | None = None
    try:
        server.start(timeout=30)
        v1 = build(tmp_path)  # the CLI hands the artifact to the server
        prometheus = PrometheusServer(
            tmp_path / "prometheus",
            [server.url.removeprefix("http://")],
            prometheus_port,
            token_file=tmp_path / ".conveyor" / "admin.token",
        )
        prometheus.start()
        prometheus.wait_targets_up()

        r1 = server.post(
            "/api/v1/releases", {"service": "catalog", "env": "canary", "artifact": v1}
        )
        assert _wait_done(server, r1["id"])["phase"] == "succeeded"
        address = server.get("/api/v1/status", env="canary")["services"][0]["address"]
        load = LoadThread(int(address.rsplit(":", 1)[1]), rate=100)
        load.start()

        # A good canary: Prometheus sees no 5xx for it, every measurement passes, promoted.
        (tmp_path / "services" / "catalog" / "VERSION").write_text("v2\n")
        v2 = build(tmp_path)
        r2 = server.post(
            "/api/v1/releases", {"service": "catalog", "env": "canary", "artifact": v2}
        )
        good = _wait_done(server, r2["id"])
        assert good["phase"] == "succeeded", good["status"]
        assert good["status"]["analysis"]["step-1"]["phase"] == "successful"
        good_values = [m for m in _measured(server, r2["id"]) if m["phase"] == "successful"]
        assert len(good_values) == 4, _measured(server, r2["id"])
        assert all(m["value"] == 0 for m in good_values)
        assert all(m["evidence"]["series"] == 1 for m in good_values)
        assert good["template"] in good_values[0]["evidence"]["query"]
        assert set(_answered_by(load, 1.5)) == {"2"}

        # A bad canary: 40% of its answers are 500s; Prometheus' ratio fails the analysis.
        (tmp_path / "services" / "catalog" / "VERSION").write_text("v3\n")
        v3 = build(tmp_path)
        r3 = server.post(
            "/api/v1/releases",
            {
                "service": "catalog",
                "env": "canary",
                "artifact": v3,
                "set": {"FAULT_ERROR_RATE": "0.4"},
            },
        )
        bad = _wait_done(server, r3["id"])
        assert bad["phase"] == "rolled_back", bad["status"]
        assert bad["status"]["abort"]["reason"] == "analysis-failed", bad["status"]
        assert bad["status"]["analysis"]["step-1"]["phase"] == "failed"
        measured = _measured(server, r3["id"])
        failed = [m for m in measured if m["phase"] == "failed"]
        assert failed, measured
        evidence = failed[0]["evidence"]
        assert evidence["address"] == prometheus.url
        assert bad["template"] in evidence["query"] and bad["template"] != good["template"]
        assert 0.1 < failed[0]["value"] < 0.8, failed[0]  # ~0.4, seen through Prometheus
        # Prometheus itself holds the evidence: the bad version's 5xx were scraped.
        errors = prometheus.query(
            f'sum(increase(conveyor_router_responses_total{{env="canary",'
            f'version="{bad["template"]}",code_class="5xx"}}[2m]))'
        )
        assert errors and float(errors[0]["value"][1]) > 0, errors

        # Every user is back on the last good version.
        assert set(_answered_by(load, 1.5)) == {"2"}
        instances = server.get("/api/v1/status", env="canary")["services"][0]["instances"]
        assert {i["revision"] for i in instances} == {2}
        assert httpx.get(address + "/", timeout=5).headers["x-conveyor-revision"] == "2"
    finally:
        if load is not None:
            load.stop()
        if prometheus is not None:
            prometheus.stop()
        server.down()
    assert project_processes(tmp_path) == [], "`conveyor down` must stop every instance"
    assert prometheus is not None and prometheus.process is not None
    assert prometheus.process.poll() is not None, "prometheus must be stopped"
