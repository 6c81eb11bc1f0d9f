"""The dashboard's Insight page at many services, against the API's DORA question.

Run: .venv/bin/python bench/dashboard_insight.py [--services 50 500] [--runs 5]

For each size, bench/insight_scale.py's generator writes 120 days of history for N
services x 3 environments into a SQLite store (36 production releases per service:
deploys, fixes, rollbacks, rolled-back rollouts; commit histories in the artifacts; the
ledger events of each release, no filler). A real server (uvicorn in a thread) serves it;
then, medians of ``--runs`` requests after one warm-up:

  API dora      GET /api/v1/dora?env=production over 90 days (the reference)
  page 90d      GET /ui/insight (90 days, every service: keys, per-service table, weeks,
                SLOs, incidents), a signed-in session, gzip accepted
  page 180d     the same over 180 days
  page shared   the 90-day page while another page's computation is reused (the
                dashboard reuses one for ``Application.trends_ttl``, 10 s)

The page makes the API's reads once and adds the weekly split and the rendering; the
ratio column says what that costs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for entry in (REPO / "src", REPO):
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))

from bench.insight_scale import generate, project_yaml  # noqa: E402
from tests.server.dashboard_support import Browser  # noqa: E402
from tests.server.support import serve  # noqa: E402

from conveyor.store import Store  # noqa: E402


def _median_ms(fetch: object, runs: int) -> tuple[float, int]:
    call = fetch  # type: ignore[assignment]
    size = len(call().content)  # type: ignore[operator]
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        answer = call()  # type: ignore[operator]
        times.append((time.perf_counter() - began) * 1000)
        assert answer.status_code == 200, answer.text[:300]
    return statistics.median(times), size


def measure(services: int, runs: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="dash-insight-") as tmp:
        root = Path(tmp)
        url = f"sqlite:///{root / 'state.db'}"
        Store.open(url).close()
        began = time.perf_counter()
        counts = generate(url, services, 0, time.time())
        print(f"  generated {counts} in {time.perf_counter() - began:.0f} s", flush=True)
        with serve(root, project_yaml(services)) as (stack, client):
            stack.app.trends_ttl = 0.0  # every request computes (the worst case)
            browser = Browser(f"http://127.0.0.1:{client.port}")
            assert browser.sign_in(str(client.token)).status_code == 303
            api_ms, api_bytes = _median_ms(
                lambda: browser.client.get(
                    "/api/v1/dora?env=production",
                    headers={"authorization": f"Bearer {client.token}"},
                ),
                runs,
            )
            page_ms, page_bytes = _median_ms(lambda: browser.get("/ui/insight?days=90"), runs)
            long_ms, _ = _median_ms(lambda: browser.get("/ui/insight?days=180"), runs)
            stack.app.trends_ttl = 3600.0  # pages sharing one computation
            shared_ms, _ = _median_ms(lambda: browser.get("/ui/insight?days=90"), runs)
            browser.close()
    return {
        "services": services,
        "releases": counts["releases"],
        "api_ms": round(api_ms, 1),
        "page_ms": round(page_ms, 1),
        "page_180_ms": round(long_ms, 1),
        "shared_ms": round(shared_ms, 1),
        "api_bytes": api_bytes,
        "page_bytes": page_bytes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--services", type=int, nargs="+", default=[50, 500])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    rows = []
    for n in sorted(args.services):
        print(f"{n} services x 3 environments ...", flush=True)
        rows.append(measure(n, args.runs))
    print()
    print(
        f"{'services':>8} {'releases':>9} {'API dora ms':>12} {'page 90d ms':>12} "
        f"{'page 180d ms':>13} {'shared ms':>10} {'page/API':>9} {'page KiB':>9}"
    )
    for r in rows:
        print(
            f"{r['services']:>8} {r['releases']:>9} {r['api_ms']:>12} {r['page_ms']:>12} "
            f"{r['page_180_ms']:>13} {r['shared_ms']:>10} {r['page_ms'] / r['api_ms']:>8.2f}x "
            f"{r['page_bytes'] / 1024:>9.1f}"
        )


if __name__ == "__main__":
    main()
