"""The prometheus provider against a real Prometheus server scraping an exporter we serve.

One Prometheus process (the Debian package's binary) is started for the module, scraping a
threaded exporter every second; tests then read back the series the exporter publishes.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor.analysis import AnalysisContext, AnalysisRun, default_providers
from conveyor.analysis.providers import PrometheusProvider
from conveyor.config.analysis import AnalysisTemplateConfig
from conveyor.core.analysis import Measurement, MetricSpec

from .support import Clock, JsonServer, free_port, run

pytestmark = pytest.mark.integration

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
EXPOSITION = b"""# TYPE conveyor_test_error_ratio gauge
conveyor_test_error_ratio{service="catalog",version="v1"} 0.002
conveyor_test_error_ratio{service="catalog",version="v2"} 0.75
# TYPE conveyor_test_requests_total counter
conveyor_test_requests_total{service="catalog",version="v2"} 1234
"""


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not Path(PROMETHEUS).exists():
        pytest.skip("needs a Prometheus server: apt-get install prometheus")
    exporter = JsonServer(lambda path: (200, "text/plain; version=0.0.4", EXPOSITION))
    work = tmp_path_factory.mktemp("prometheus")
    config = work / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: exporter\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{exporter.port}']}}]\n"
    )
    port = free_port()
    address = f"http://127.0.0.1:{port}"
    log = (work / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={work / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_for_series(address, process)
        yield address
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        log.close()
        exporter.close()


def _wait_for_series(address: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"prometheus exited with {process.returncode}")
        try:
            answer = httpx.get(
                f"{address}/api/v1/query", params={"query": "conveyor_test_error_ratio"}
            )
            if answer.status_code == 200 and len(answer.json()["data"]["result"]) == 2:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("prometheus did not scrape the exporter within 30 s")


def measure(address: str, query: str, **overrides: Any) -> Measurement:
    values: dict[str, Any] = {"name": "m", "provider": "prometheus", "timeout": 5.0}
    values |= {"config": {"address": address, "query": query}}
    values.update(overrides)
    spec = MetricSpec(**values)
    return run(lambda: PrometheusProvider().measure(spec, AnalysisContext("run", clock=Clock())))


def test_single_series_is_a_number(prometheus: str) -> None:
    query = 'conveyor_test_error_ratio{version="v2"}'
    measurement = measure(prometheus, query, failure_condition="result > 0.5")
    assert (measurement.phase, measurement.value) == ("failed", 0.75)
    assert measurement.evidence["series"] == 1
    assert measurement.evidence["query"] == query


def test_scalar_is_a_number(prometheus: str) -> None:
    measurement = measure(prometheus, "scalar(vector(0.25))", success_condition="result < 0.5")
    assert (measurement.phase, measurement.value) == ("successful", 0.25)


def test_several_series_are_a_list(prometheus: str) -> None:
    measurement = measure(
        prometheus, "conveyor_test_error_ratio", failure_condition="max(result) > 0.5"
    )
    assert measurement.phase == "failed"
    assert sorted(measurement.value) == [0.002, 0.75]


def test_an_empty_result_is_no_data_not_a_failure(prometheus: str) -> None:
    query = 'conveyor_test_error_ratio{version="v9"}'  # a version that got no traffic
    measurement = measure(prometheus, query, failure_condition="result > 0.01")
    assert (measurement.phase, measurement.message) == ("inconclusive", "no data")
    assert measurement.evidence["series"] == 0


def test_a_bad_query_is_an_error_with_prometheus_words(prometheus: str) -> None:
    measurement = measure(prometheus, "sum(rate(conveyor_test_requests_total[1m])")
    assert measurement.phase == "error"
    assert measurement.message.startswith("prometheus bad_data:")
    assert measurement.evidence["status"] == 400


def test_a_range_query_is_an_error(prometheus: str) -> None:
    measurement = measure(prometheus, "conveyor_test_requests_total[1m]")
    assert measurement.phase == "error"
    assert "use an instant query" in measurement.message


def test_an_unreachable_server_is_an_error() -> None:
    measurement = measure(f"http://127.0.0.1:{free_port()}", "up", timeout=2.0)
    assert measurement.phase == "error"
    assert measurement.message.startswith("prometheus at http://127.0.0.1:")


def test_a_template_filled_per_release_fails_the_run(prometheus: str) -> None:
    template = AnalysisTemplateConfig.model_validate(
        {
            "args": ["service", "canary_version"],
            "metrics": [
                {
                    "name": "errors",
                    "provider": "prometheus",
                    "address": prometheus,
                    "query": 'conveyor_test_error_ratio{service="{{args.service}}",'
                    'version="{{args.canary_version}}"}',
                    "failure_condition": "result > 0.01",
                }
            ],
        }
    )
    clock = Clock()
    specs = template.metric_specs({"service": "catalog", "canary_version": "v2"})
    context = AnalysisContext("run-3", canary_version="v2", clock=clock)
    analysis = AnalysisRun(specs, default_providers(), context, started_at=clock.now)
    run(lambda: analysis.step(clock.now))
    summary = analysis.summary()
    assert summary.phase == "failed"
    assert (
        summary.message == "errors failed: 1 failed (limit 0): result 0.75 matched 'result > 0.01'"
    )
