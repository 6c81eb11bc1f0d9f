"""`conveyor slo rules`: Prometheus accepts the file and fires the alerts it describes.

Both checks are Prometheus' own tool from Debian's prometheus package: ``promtool check
rules`` for the file, and ``promtool test rules`` for the alerts on synthetic series of the
router's metrics (2% errors against a 99.9% objective burn 20x: page and ticket fire; 0.05%
burns 0.5x: nothing fires).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.cli.support import assert_clean_error, conveyor

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is missing: apt-get install prometheus"
)

CONFIG = """\
project: rules
services:
  shop:
    build: {run: "true", outputs: [app]}
    run: "true"
    slos:
      - name: availability
        objective: 99.9%
      - name: fast
        objective: 99%
        indicator: latency
        threshold: 250ms
        period: 30d
      - name: checkout
        objective: 99.5%
        source: prometheus
        prometheus:
          bad: 'sum(rate(http_requests_total{job="shop",code=~"5.."}[$window]))'
          total: 'sum(rate(http_requests_total{job="shop"}[$window]))'
        environments: [staging, production]
environments:
  staging:
  production:
"""

UNIT = """\
rule_files: [rules.yaml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'conveyor_router_requests_total{{service="shop",env="production",version="v1"}}'
        values: '0+6000x90'
      - series: 'conveyor_router_responses_total{{service="shop",env="production",{errors}}}'
        values: '0+{bad}x90'
      - series: 'conveyor_router_proxy_errors_total{{service="shop",env="production",version="v1"}}'
        values: '0x90'
    alert_rule_test:
      - eval_time: 30m
        alertname: ConveyorSLOBurnPage
        exp_alerts: {page}
      - eval_time: 30m
        alertname: ConveyorSLOBurnTicket
        exp_alerts: {ticket}
"""


def _alert(severity: str) -> str:
    labels = {"service": "shop", "env": "production", "slo": "availability", "severity": severity}
    rules = {
        "page": "page 1h/5m at 14.4x, page 6h/30m at 6x",
        "ticket": "ticket 1d/2h at 3x, ticket 3d/6h at 1x",
    }[severity]
    annotations = {
        "summary": f"shop burns its availability error budget in production too fast ({severity})",
        "description": f"Objective 99.9%; the SRE workbook's multiwindow burn-rate alert {rules}.",
    }
    return json.dumps([{"exp_labels": labels, "exp_annotations": annotations}])


@pytest.fixture
def written(tmp_path: Path) -> Path:
    (tmp_path / "conveyor.yaml").write_text(CONFIG)
    result = conveyor("slo", "rules", "-o", str(tmp_path / "rules.yaml"), root=tmp_path)
    assert result.code == 0, result
    return tmp_path


@needs_promtool
def test_promtool_accepts_the_rules(written: Path) -> None:
    assert PROMTOOL is not None
    done = subprocess.run(
        [PROMTOOL, "check", "rules", str(written / "rules.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 36 rules found" in done.stdout  # 4 SLO-environments x (7 windows + 2)


@needs_promtool
@pytest.mark.parametrize(("bad", "fires"), [(120, True), (3, False)], ids=["burn-20x", "burn-0.5x"])
def test_promtool_fires_the_alerts_the_rules_describe(written: Path, bad: int, fires: bool) -> None:
    assert PROMTOOL is not None
    page = _alert("page") if fires else "[]"
    ticket = _alert("ticket") if fires else "[]"
    errors = 'version="v1",code_class="5xx"'
    unit = UNIT.format(bad=bad, page=page, ticket=ticket, errors=errors)
    (written / "test.yaml").write_text(unit)
    done = subprocess.run(
        [PROMTOOL, "test", "rules", "test.yaml"],
        cwd=written,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_no_slo_no_rules(tmp_path: Path) -> None:
    text = CONFIG.split("    slos:")[0] + "environments:\n  production:\n"
    (tmp_path / "conveyor.yaml").write_text(text)
    result = conveyor("slo", "rules", root=tmp_path)
    assert_clean_error(result, 2)
    assert "declares no SLO" in result.stderr


def test_a_bad_slo_is_named_with_file_line_and_fix(tmp_path: Path) -> None:
    (tmp_path / "conveyor.yaml").write_text(
        CONFIG.replace("threshold: 250ms", "threshold: 300ms").replace(
            "environments: [staging, production]", "environments: [staging, prod]"
        )
    )
    result = conveyor("slo", "rules", root=tmp_path)
    assert result.code != 0
    assert "conveyor.yaml:12" in result.stderr and "300ms is not one of them" in result.stderr
    assert "250ms" in result.stderr  # the fix names the buckets
    assert "environments[1]" in result.stderr and "did you mean 'production'" in result.stderr
    assert "Traceback" not in result.output
