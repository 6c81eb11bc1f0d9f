"""How the ledger reads to a person: revisions beside template keys, local times, headers."""

from __future__ import annotations

import io
import time

from rich.console import Console

from conveyor.cli import render


def test_weights_name_revisions_and_shares() -> None:
    details = {"weights": {"tfea537e470": 25, "t0ab12cd34e": 75}, "revisions": {"tfea537e470": 4}}
    assert render.weights_text(details) == "users: r4 25%, t0ab12cd34e 75%"
    assert render.summarize("traffic.shifted", details) == "users: r4 25%, t0ab12cd34e 75%"
    assert render.weights_text({"weights": {}}) == "users: none"


def test_the_events_table_has_headers_and_local_times() -> None:
    at = 1_700_000_000.0
    event = {
        "seq": 1,
        "at": at,
        "actor": "alice",
        "kind": "release.aborted",
        "service": "web",
        "env": "production",
        "details": {"reason": "error-rate", "message": "5% of 200 requests failed"},
    }
    buffer = io.StringIO()
    Console(file=buffer, width=200).print(render.events_table([event]))
    text = buffer.getvalue()
    for header in ("time", "where", "event", "what", "who"):
        assert header in text
    assert time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at)) in text
    assert "web/production" in text and "error-rate: 5% of 200 requests failed" in text


def test_status_says_an_analysis_verdict_once() -> None:
    held = "analysis errors was inconclusive (only 3 samples); `conveyor promote` to continue"
    verdicts = {"step-1": "only 3 samples", "background": "successful after 4 measurements"}
    assert render.analysis_lines(verdicts, held) == [
        "analysis background: successful after 4 measurements"
    ]
