"""The dashboard's overview at many services: render time, page size, time to first paint.

Run: .venv/bin/python bench/dashboard_overview.py [--services 50 500] [--runs 5] [--no-browser]

For each size a project of N services x 3 environments (dev, staging, production) gets
releases written straight into its SQLite store by ``tests/server/dashboard_support.seed``
(every phase the grid draws differently, drift, canaries; no controller, no instances).
Then, for each size:

  build+render   ``Application.overview`` + the Jinja2 template, in process (what a GET does)
  GET /ui/       the whole request through a real uvicorn server with a session cookie
  stream tick    one overview stream update with nothing changed (each open page pays this
                 every 2 s)
  first paint    first-contentful-paint of /ui/ in Debian's headless Chromium (Selenium,
                 system browser), and DOMContentLoaded

Medians of ``--runs``; the ratio column is against the smallest size, measured in the same
run. Raw numbers in bench/results/dashboard_overview.json (gitignored); a screenshot of the
largest overview in test-artifacts/dashboard/overview-<N>x3.png.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for entry in (REPO / "src", REPO):
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))

import uvicorn  # noqa: E402
from tests.server.dashboard_support import Browser, config_text, seed  # noqa: E402

from conveyor.application import Caller  # noqa: E402
from conveyor.server.api import create_app  # noqa: E402
from conveyor.server.dashboard.sessions import Session  # noqa: E402
from conveyor.server.dashboard.streams import Updates  # noqa: E402
from conveyor.server.dashboard.views import VIEWS  # noqa: E402
from conveyor.server.stack import build_stack  # noqa: E402

RESULTS = REPO / "bench" / "results"
SHOTS = Path(os.environ.get("CONVEYOR_TEST_ARTIFACTS", REPO / "test-artifacts")) / "dashboard"
OVERVIEW = next(v for v in VIEWS if v.name == "overview")


def _median_ms(samples: list[float]) -> float:
    return round(1000 * statistics.median(samples), 2)


def measure(services: int, runs: int, browser: bool) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix=f"dash{services}-"))
    try:
        (root / "conveyor.yaml").write_text(config_text(services))
        stack = build_stack(root / "conveyor.yaml", database_url=f"sqlite:///{root / 'state.db'}")
        stack.app.tokens.bootstrap(stack.layout.admin_token, "bench@local")
        started = time.perf_counter()
        counts = seed(stack.store, services)
        seeded = time.perf_counter() - started
        api = create_app(stack.app, project_name="bench")
        dashboard = api.state.dashboard
        caller = Caller("bench")

        def render() -> str:
            context = OVERVIEW.context(stack.app, caller, {}, {})
            return dashboard.render(
                OVERVIEW.template,
                title="Overview",
                page_view=OVERVIEW,
                caller=caller,
                session=None,
                csrf="x" * 43,
                path="/ui/",
                stream="/ui/stream/",
                **context,
            )

        render()  # templates compiled, caches warm
        timings = []
        for _ in range(runs):
            t0 = time.perf_counter()
            html = render()
            timings.append(time.perf_counter() - t0)
        size = len(html.encode())
        cells = html.count('class="cell ')

        updates = Updates(
            dashboard, OVERVIEW, caller, Session("s", "t", "c", 0, 0), {}, {}, known=None
        )
        base = {"page_view": OVERVIEW, "caller": caller, "csrf": "x", "path": "/ui/stream/"}
        updates.render(base)  # primes: what the page has
        ticks = []
        for _ in range(runs):
            t0 = time.perf_counter()
            quiet = updates.render(base)
            ticks.append(time.perf_counter() - t0)
        assert quiet == [], "nothing changed, nothing must be sent"

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(api, log_level="critical", lifespan="off"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.01)
        try:
            client = Browser(f"http://127.0.0.1:{port}")
            client.sign_in(stack.layout.admin_token.read_text().strip())
            gets = []
            for _ in range(runs):
                t0 = time.perf_counter()
                answer = client.get("/ui/")
                gets.append(time.perf_counter() - t0)
                assert answer.status_code == 200
            session = client.client.cookies.get("conveyor_session") or ""
            client.close()
            paint = first_paint(port, session, runs, services) if browser else None
        finally:
            server.should_exit = True
            thread.join(timeout=10)
            sock.close()
        stack.store.close()
        return {
            "services": services,
            "cells": cells,
            "phases": counts,
            "seed_seconds": round(seeded, 1),
            "render_ms": _median_ms(timings),
            "page_bytes": size,
            "page_gzip_bytes": len(gzip.compress(html.encode())),
            "get_ms": _median_ms(gets),
            "stream_tick_ms": _median_ms(ticks),
            "paint": paint,
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


def first_paint(port: int, session: str, runs: int, services: int) -> dict[str, float] | None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        print("  (no chromium/chromedriver: first paint not measured)")
        return None
    os.environ.setdefault("SE_OFFLINE", "true")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1360,900",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    base = f"http://127.0.0.1:{port}"
    try:
        driver.get(base + "/ui/login")
        driver.add_cookie({"name": "conveyor_session", "value": session, "path": "/ui"})
        driver.get(base + "/ui/")  # warm: static files cached like a returning visitor's
        fcp, dcl = [], []
        for _ in range(runs):
            driver.get(base + "/ui/")
            timing = [None, 0.0]
            for _ in range(30):  # the paint entry can land a moment after the load
                timing = driver.execute_script(
                    "const p = performance.getEntriesByName('first-contentful-paint')[0];"
                    "const n = performance.getEntriesByType('navigation')[0];"
                    "return [p ? p.startTime : null, n.domContentLoadedEventEnd];"
                )
                if timing[0] is not None:
                    break
                time.sleep(0.1)
            if timing[0] is not None:
                fcp.append(float(timing[0]))
            dcl.append(float(timing[1]))
        SHOTS.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(SHOTS / f"overview-{services}x3.png"))
        return {
            "first_contentful_paint_ms": round(statistics.median(fcp), 1) if fcp else -1,
            "dom_content_loaded_ms": round(statistics.median(dcl), 1),
        }
    finally:
        driver.quit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--services", type=int, nargs="+", default=[50, 500])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-browser", action="store_true")
    args = parser.parse_args()
    rows = []
    for n in sorted(args.services):
        print(f"{n} services x 3 environments ...", flush=True)
        rows.append(measure(n, args.runs, not args.no_browser))
    ref = rows[0]
    print()
    header = (
        f"{'services':>8} {'cells':>6} {'render ms':>10} {'GET ms':>8} {'tick ms':>8} "
        f"{'page KiB':>9} {'gzip KiB':>9} {'FCP ms':>8} {'DCL ms':>8}  "
        f"ratio(render, GET, FCP) vs {ref['services']}"
    )
    print(header)
    for row in rows:
        paint = row["paint"] or {}
        ref_paint = ref["paint"] or {}
        fcp = paint.get("first_contentful_paint_ms", float("nan"))
        ratio_fcp = fcp / ref_paint["first_contentful_paint_ms"] if ref_paint else float("nan")
        print(
            f"{row['services']:>8} {row['cells']:>6} {row['render_ms']:>10} {row['get_ms']:>8} "
            f"{row['stream_tick_ms']:>8} {row['page_bytes'] / 1024:>9.1f} "
            f"{row['page_gzip_bytes'] / 1024:>9.1f} {fcp:>8} "
            f"{paint.get('dom_content_loaded_ms', float('nan')):>8}  "
            f"{row['render_ms'] / ref['render_ms']:.1f}x, {row['get_ms'] / ref['get_ms']:.1f}x, "
            f"{ratio_fcp:.1f}x"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = {"machine": platform.platform(), "python": platform.python_version(), "rows": rows}
    (RESULTS / "dashboard_overview.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
