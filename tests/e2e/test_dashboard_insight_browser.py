"""The Insight page in a real headless Chromium (Debian's, driven by Selenium): it renders
its DORA keys and draws its four weekly charts with the vendored uPlot, the firing SLO
stands out, and the resolve confirmation opens from the keyboard.

The server is real (uvicorn on a socket, the same ``serve`` as the HTTP tests) on a store
holding 120 days of generated history (bench/insight_scale.py's generator, 6 services), so
the scenario stays short. Screenshot: ``$CONVEYOR_TEST_ARTIFACTS/dashboard/insight.png``.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from bench.insight_scale import generate

from conveyor.store import Store
from tests.server.support import serve
from tests.server.test_dashboard_insight import _config, _ratio

from .test_dashboard_browser import ARTIFACTS, CHROMIUM, DRIVER, _driver, _until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        CHROMIUM is None or DRIVER is None,
        reason="no headless browser here: apt-get install chromium chromium-driver",
    ),
]


def test_the_insight_page_draws_its_charts(tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    url = f"sqlite:///{tmp_path / 'state.db'}"
    Store.open(url).close()
    generate(url, 4, 0, time.time())
    shots = ARTIFACTS / "dashboard"
    shots.mkdir(parents=True, exist_ok=True)
    with serve(tmp_path, _config()) as (stack, client):
        stack.app.slos.prometheus = _ratio
        asyncio.run(stack.app.slos.tick())
        client.post(
            "/api/v1/incidents",
            json_body={"title": "checkout 500s", "service": "svc001", "env": "production"},
        )
        driver: Any = _driver()
        try:
            base = f"http://127.0.0.1:{client.port}"
            driver.get(f"{base}/ui/insight?days=90")
            _until(lambda: "/ui/login" in driver.current_url, "the sign-in form")
            field = driver.find_element(By.ID, "token")
            field.send_keys(str(client.token))
            field.submit()
            _until(lambda: "/ui/insight" in driver.current_url, "the Insight page")
            nav = driver.find_element(By.CSS_SELECTOR, "nav a[aria-current=page]")
            assert nav.text == "Insight"
            rows = driver.find_elements(By.CSS_SELECTOR, "table.keys tbody tr")
            assert len(rows) == 5 and all(r.text for r in rows)
            _until(
                lambda: (
                    driver.execute_script(
                        "return document.querySelectorAll('.chart canvas').length"
                    )
                    == 4
                ),
                "four charts drawn",
            )
            # Thirteen weeks of 90 days, one series: the chart has the page's data.
            points = driver.execute_script(
                "return JSON.parse(document.getElementById('chart-data').textContent)"
                ".versions.all.per_week.length"
            )
            assert points == 13
            firing = driver.find_element(By.CSS_SELECTOR, "tr.slo.alarm")
            assert "page firing" in firing.text
            _until(lambda: "live" in driver.find_element(By.ID, "live-state").text, "the stream")
            summary = driver.find_element(By.CSS_SELECTOR, "details[id^=resolve-] summary")
            driver.execute_script("arguments[0].focus()", summary)
            summary.send_keys(Keys.ENTER)
            _until(
                lambda: driver.find_element(By.CSS_SELECTOR, "details[id^=resolve-]").get_attribute(
                    "open"
                ),
                "the confirmation to open",
            )
            driver.set_window_size(1360, 2000)
            driver.save_screenshot(str(shots / "insight.png"))
        finally:
            driver.quit()
