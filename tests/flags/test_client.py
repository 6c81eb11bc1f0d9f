"""The SDK: typed answers and defaults, bootstrap, never blocking on the network, staleness,
change events, and outcome reports counted per variant of guarded flags."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

from conveyor.flags import FlagsClient

from .relay_stub import set_server

DOC: dict[str, Any] = {
    "env": "production",
    "flags": {
        "checkout": {
            "environments": {
                "production": {"on": True, "rollout": {"percentage": 50, "variant": "on"}}
            }
        },
        "banner": {
            "kind": "string",
            "variants": {"plain": "hi", "loud": "HI"},
            "default": "plain",
            "environments": {"production": {"on": True, "serve": "loud"}},
        },
        "limit": {
            "kind": "number",
            "variants": {"low": 10, "high": 2.5},
            "default": "low",
            "environments": {"production": {"on": True}},
        },
        "layout": {
            "kind": "json",
            "variants": {"a": {"cols": 2}},
            "default": "a",
            "environments": {"production": {"on": True}},
        },
    },
    "segments": {},
    "guarded": ["checkout"],
}


def _unreachable() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"  # closed when the block ends


def test_typed_values_defaults_and_errors(tmp_path: Path) -> None:
    client = FlagsClient(None, env="production", bootstrap=DOC)
    assert client.string_value("banner", "?") == "HI"
    assert client.number_value("limit", 0) == 10
    assert client.json_value("layout", None) == {"cols": 2}
    assert client.bool_value("banner", True) is True  # a string flag: the caller's default
    assert client.bool_value("missing", False) is False
    found = client.details("banner", "?", kind="string")
    assert (found.value, found.variant, found.reason, found.error) == ("HI", "loud", "STATIC", None)
    assert client.details("missing", 1).error == "FLAG_NOT_FOUND"
    assert client.details("banner", 1, kind="number").error == "TYPE_MISMATCH"
    assert client.source == "bootstrap" and client.staleness is None and client.is_stale()


def test_a_broken_bootstrap_leaves_the_defaults(tmp_path: Path) -> None:
    (tmp_path / "boot.json").write_text("{not json")
    client = FlagsClient(None, env="production", bootstrap=tmp_path / "boot.json")
    assert client.bool_value("checkout", True) is True
    wrong_env = FlagsClient(None, env="staging", bootstrap=DOC)
    assert wrong_env.keys() == []


def test_evaluation_never_waits_for_an_unreachable_relay() -> None:
    client = FlagsClient(
        _unreachable(), env="production", bootstrap=DOC, interval=0.05, start=False
    )
    errors: list[Any] = []
    client.on("error", lambda event, details: errors.append(details))
    client.start()
    started = time.perf_counter()
    for i in range(20_000):
        client.bool_value("checkout", False, {"targetingKey": str(i)})
    assert time.perf_counter() - started < 5  # no network on the evaluation path
    deadline = time.monotonic() + 5
    while not errors and time.monotonic() < deadline:
        time.sleep(0.01)
    client.close()
    assert errors and "cannot reach the relay" in errors[0]["message"]
    assert client.string_value("banner", "?") == "HI"  # the bootstrap still answers


def test_sync_changes_staleness_and_outcomes() -> None:
    with set_server() as (relay, url):
        relay.document = DOC
        client = FlagsClient(url, env="production", interval=0.05, stale_after=0.3, start=False)
        events: list[tuple[str, Any]] = []
        for name in ("ready", "changed", "stale"):
            client.on(name, lambda event, details: events.append((event, details)))
        client.start()
        deadline = time.monotonic() + 5
        while client.source != "relay" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert client.string_value("banner", "?") == "HI"
        assert client.staleness is not None and client.staleness < 1

        changed = {
            **DOC,
            "flags": {**DOC["flags"], "banner": {**DOC["flags"]["banner"], "environments": {}}},
        }
        relay.document = changed
        while client.string_value("banner", "?") != "hi" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert client.string_value("banner", "?") == "hi"  # off: the off variant (= default)
        assert ("changed", {"etag": client.etag, "flags": ["banner"]}) in events

        for i in range(300):  # evaluations of a guarded flag are exposures
            client.bool_value("checkout", False, {"targetingKey": f"u{i}"})
        client.string_value("banner", "?")  # not guarded: not counted
        for i in range(200):
            client.report({"targetingKey": f"u{i}"}, error=i % 10 == 0)

        def rows() -> list[dict[str, Any]]:
            return [row for report in list(relay.reports) for row in report["counts"]]

        while sum(r["requests"] for r in rows()) < 200 and time.monotonic() < deadline:
            time.sleep(0.01)
        reported = rows()
        assert {r["flag"] for r in reported} == {"checkout"}
        assert {r["variant"] for r in reported} == {"on", "off"}
        assert sum(r["exposures"] for r in reported) == 300
        assert sum(r["requests"] for r in reported) == 200
        assert sum(r["errors"] for r in reported) == 20

        relay.down = True
        while not any(e == "stale" for e, _ in events) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert any(e == "stale" for e, _ in events) and client.is_stale()
        assert client.string_value("banner", "?") == "hi"  # the last set still answers
        client.close()
    assert events[0][0] == "ready"
