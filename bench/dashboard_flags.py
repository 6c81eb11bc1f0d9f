"""The dashboard's Flags page at many flags: request time and page size, against the API.

Run: .venv/bin/python bench/dashboard_flags.py [--flags 30 300] [--runs 7]

For each size a project with N flags x 3 environments (every 5th with a targeting rule on a
segment, every 4th with a rollout in production, every 10th changed live so the page marks
drift) is served by a real uvicorn server. Measured through it, with a session cookie or a
bearer token:

  GET /api/v1/flags     the API's JSON list of the same flags (the reference)
  GET /ui/flags         the Flags page (every flag x environment, drift marked)
  GET /ui/flags/KEY     one flag's page (definition, states, history, guarded rollouts)

Medians of ``--runs``; ``x API`` is the page's time over the API list's, measured in the
same run on the same data. Raw numbers in bench/results/dashboard_flags.json (gitignored).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for entry in (REPO / "src", REPO):
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))

from tests.server.dashboard_support import Browser  # noqa: E402
from tests.server.support import serve  # noqa: E402

RESULTS = REPO / "bench" / "results"


def config(flags: int) -> str:
    lines = [
        "project: flagbench",
        "services:",
        "  web:",
        '    build: {run: "true", outputs: [app]}',
        '    run: "true"',
        "environments:",
        "  dev: {}",
        "  staging: {}",
        "  production: {}",
        "segments:",
        "  staff:",
        '    when: [{attribute: email, op: ends_with, values: ["@corp.com"]}]',
        "flags:",
    ]
    for i in range(flags):
        production = "{on: false}"
        if i % 5 == 0:
            production = '{on: true, rules: [{segments: [staff], serve: "on"}]}'
        elif i % 4 == 0:
            production = '{on: true, rollout: {percentage: 25, variant: "on"}}'
        lines += [
            f"  flag-{i:04d}:",
            f"    description: flag number {i}",
            "    environments:",
            "      dev: {on: true}",
            "      staging: {on: true}",
            f"      production: {production}",
        ]
    return "\n".join(lines) + "\n"


def _timed(get: Any, path: str, runs: int) -> tuple[float, int]:
    samples, size = [], 0
    for _ in range(runs):
        started = time.perf_counter()
        answer = get(path)
        samples.append(time.perf_counter() - started)
        assert answer.status_code == 200, (path, answer.status_code)
        size = answer.num_bytes_downloaded  # on the wire (pages over 8 KiB are gzipped)
    return round(1000 * statistics.median(samples), 2), size


def measure(flags: int, runs: int) -> dict[str, Any]:
    with serve(Path(tempfile.mkdtemp(prefix=f"flags{flags}-")), config(flags)) as (_, client):
        for i in range(0, flags, 10):  # live changes: drift on the page
            answer = client.post(
                f"/api/v1/flags/flag-{i:04d}/state",
                json_body={"env": "dev", "on": False, "reason": "bench"},
            )
            assert answer.status_code == 200, answer.text
        browser = Browser(f"http://127.0.0.1:{client.port}")
        assert browser.sign_in(str(client.token)).status_code == 303
        headers = {"authorization": f"Bearer {client.token}"}
        api_ms, api_size = _timed(
            lambda p: browser.client.get(p, headers=headers), "/api/v1/flags", runs
        )
        list_ms, list_size = _timed(browser.get, "/ui/flags", runs)
        page_ms, page_size = _timed(browser.get, "/ui/flags/flag-0000", runs)
        browser.close()
    return {
        "flags": flags,
        "api_ms": api_ms,
        "api_bytes": api_size,
        "list_ms": list_ms,
        "list_bytes": list_size,
        "flag_ms": page_ms,
        "flag_bytes": page_size,
        "list_vs_api": round(list_ms / api_ms, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flags", type=int, nargs="+", default=[30, 300])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    rows = [measure(n, args.runs) for n in args.flags]
    print(f"{platform.python_implementation()} {platform.python_version()}, medians of {args.runs}")
    print("flags | GET /api/v1/flags | GET /ui/flags | x API | sent (gzip) | GET /ui/flags/KEY")
    for r in rows:
        print(
            f"{r['flags']:5d} | {r['api_ms']:8.1f} ms | {r['list_ms']:8.1f} ms | "
            f"{r['list_vs_api']:5.2f} | {r['list_bytes'] / 1024:6.1f} KiB | {r['flag_ms']:6.1f} ms"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "dashboard_flags.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
