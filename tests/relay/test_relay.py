"""A real relay process between a real server and SDKs: sync, push, OFREP, outages, load.

One story per module (a server, a relay process, restarts): the relay syncs the set,
serves it to the SDK, which follows a kill switch within one sync interval; OFREP clients
evaluate through it; the relay's cache file is 0600 and holds no token; with the server
down the relay keeps serving, and a relay restarted during the outage serves from disk;
2,000 polling SDK clients cost the server no request at all.
"""

from __future__ import annotations

import asyncio
import json
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor.application import Caller
from conveyor.flags import FlagsClient
from conveyor.load.pollers import poll
from tests.cli.support import cli_env
from tests.server.support import serve

pytestmark = pytest.mark.integration

KEY = "sdk-key-" + "x" * 24
INTERVAL = 1.0

CONFIG = """\
project: relayed
services:
  web:
    build: {run: "true", outputs: [app]}
    run: "true"
environments:
  staging: {}
  production: {}
flags:
  new-checkout:
    environments:
      production:
        on: true
        rules:
          - when: [{attribute: email, op: ends_with, values: ["@corp.com"]}]
            serve: "on"
        rollout: {percentage: 25, variant: "on"}
  banner:
    kind: string
    variants: {plain: "hello", loud: "HELLO"}
    default: plain
    environments:
      production: {on: true, serve: loud}
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Relay:
    def __init__(self, root: Path, server_port: int, token: str) -> None:
        self.root, self.server_port, self.token = root, server_port, token
        self.port = _free_port()
        self.cache = root / "relay-cache"
        self.process: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        keys = self.root / "sdk-keys"
        keys.write_text(KEY + "\n")
        env = cli_env(CONVEYOR_TOKEN=self.token)
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "conveyor",
                "-C",
                str(self.root),
                "relay",
                "--server",
                f"http://127.0.0.1:{self.server_port}",
                "--env",
                "production",
                "--port",
                str(self.port),
                "--cache-dir",
                str(self.cache),
                "--sdk-keys",
                str(keys),
                "--interval",
                f"{INTERVAL}s",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=self._open_log(),
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/health", timeout=1).json()["sets"]["production"]:
                    return
            except (httpx.HTTPError, KeyError, ValueError):
                pass
            assert self.process.poll() is None, (
                self.process.stderr.read() if self.process.stderr else ""
            )
            time.sleep(0.1)
        raise AssertionError("the relay did not start")

    def _open_log(self) -> Any:
        if self._log is None:
            self._log = (self.root / "relay.log").open("ab")
        return self._log

    def health(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.url}/health", timeout=5).json())

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=15)
        if self._log is not None:
            self._log.close()
            self._log = None


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("relay") / "p"
    port = _free_port()
    record: dict[str, Any] = {}
    relay: Relay | None = None
    try:
        with serve(root, CONFIG, port=port) as (stack, admin):
            assert admin.token is not None
            relay = Relay(root, port, admin.token)
            relay.start()
            record["relay"] = relay
            sdk = FlagsClient(relay.url, key=KEY, env="production", interval=INTERVAL)
            deadline = time.monotonic() + 10
            while sdk.source != "relay" and time.monotonic() < deadline:
                time.sleep(0.05)
            record["before_kill"] = sdk.bool_value("new-checkout", False, {"email": "a@corp.com"})
            record["banner"] = sdk.details("banner", "?", {}, kind="string")
            record["mismatch"] = sdk.details("banner", False, {}, kind="boolean")
            changes: list[Any] = []
            sdk.on("changed", lambda event, details: changes.append(details))

            killed_at = time.monotonic()
            answer = admin.post("/api/v1/flags/new-checkout/kill", json_body={"reason": "INC-1"})
            assert answer.status_code == 200, answer.text
            while sdk.bool_value("new-checkout", False, {"email": "a@corp.com"}):
                assert time.monotonic() - killed_at < 10, "the kill switch did not arrive"
                time.sleep(0.02)
            record["kill_seconds"] = time.monotonic() - killed_at
            record["changes"] = changes
            record["ofrep"] = _ofrep(relay)
            record["load"] = asyncio.run(_load(relay, clients=2000, polls=2))
            record["outcomes"] = _outcomes_through_the_relay(stack, admin, relay, sdk)
            sdk.close()
            record["cache_files"] = sorted(relay.cache.iterdir())
        # The server is down from here on.
        record["during_outage"] = _ofrep_one(relay, "banner", {})
        relay.stop()
        relay.start()
        record["restarted"] = relay.health()
        record["restarted_answer"] = _ofrep_one(relay, "banner", {})
        cold = FlagsClient(relay.url, key=KEY, env="production", start=False)
        record["cold_sync"] = cold.sync_now()
        record["cold_value"] = cold.string_value("banner", "?")
        cold.close()
        record["token"] = admin.token
        yield record
    finally:
        if relay is not None:
            relay.stop()


def _outcomes_through_the_relay(
    stack: Any, admin: Any, relay: Relay, sdk: FlagsClient
) -> dict[str, Any]:
    """A guarded rollout of ``banner``: 50 SDK reports reach the server as one forward."""
    answer = admin.post(
        "/api/v1/flags/banner/guarded",
        json_body={
            "env": "production",
            "steps": [50, 100],
            "interval": 600,
            "variant": "loud",
            "reason": "guarded",
        },
    )
    assert answer.status_code == 201, answer.text
    deadline = time.monotonic() + 10
    while "banner" not in sdk._snapshot.guarded and time.monotonic() < deadline:
        time.sleep(0.02)
    forwarded_before = relay.health()["upstream"]["forwarded"]
    for i in range(50):
        sdk.report({"targetingKey": f"user-{i}"}, error=i % 5 == 0)
    while relay.health()["upstream"]["forwarded"] == forwarded_before:
        assert time.monotonic() < deadline, "the relay forwarded nothing"
        time.sleep(0.05)
    stack.app.flag_rollouts.tick()
    [rollout] = stack.app.flag_rollouts.progress(Caller.system(), "banner")
    return {
        "counts": rollout["status"]["counts"],
        "forwards": relay.health()["upstream"]["forwarded"] - forwarded_before,
    }


def _ofrep_one(relay: Relay, key: str, context: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    answer = httpx.post(
        f"{relay.url}/ofrep/v1/evaluate/flags/{key}",
        json={"context": context},
        headers={"x-api-key": KEY},
        timeout=5,
    )
    return answer.status_code, answer.json()


def _ofrep(relay: Relay) -> dict[str, Any]:
    out: dict[str, Any] = {}
    out["one"] = _ofrep_one(relay, "banner", {"targetingKey": "u1"})
    out["missing"] = _ofrep_one(relay, "nope", {})
    out["no_key"] = httpx.post(
        f"{relay.url}/ofrep/v1/evaluate/flags/banner", json={"context": {}}, timeout=5
    ).status_code
    bulk = httpx.post(
        f"{relay.url}/ofrep/v1/evaluate/flags",
        json={"context": {"targetingKey": "u1"}},
        headers={"authorization": f"Bearer {KEY}"},
        timeout=5,
    )
    out["bulk"] = bulk.json()
    out["bulk_again"] = httpx.post(
        f"{relay.url}/ofrep/v1/evaluate/flags",
        json={"context": {"targetingKey": "u1"}},
        headers={"authorization": f"Bearer {KEY}", "if-none-match": bulk.headers["etag"]},
        timeout=5,
    ).status_code
    return out


async def _load(relay: Relay, *, clients: int, polls: int) -> dict[str, Any]:
    """``clients`` SDK pollers, each on its own connection; upstream calls counted."""
    before = relay.health()["upstream"]["requests"]
    done = await poll(
        "127.0.0.1", relay.port, "/sdk/v1/flags/production", KEY, clients=clients, polls=polls
    )
    after = relay.health()["upstream"]["requests"]
    return {"statuses": done.statuses, "upstream": after - before, "failures": done.failures}


def test_sdk_evaluates_what_the_relay_synced(story: dict[str, Any]) -> None:
    assert story["before_kill"] is True
    banner = story["banner"]
    assert (banner.value, banner.variant, banner.reason) == ("HELLO", "loud", "STATIC")
    assert story["mismatch"].error == "TYPE_MISMATCH" and story["mismatch"].value is False


def test_kill_switch_reaches_the_sdk_within_one_interval(story: dict[str, Any]) -> None:
    # Server push to the relay is immediate; the SDK polls the relay every INTERVAL.
    assert story["kill_seconds"] < INTERVAL + 1.0
    assert any("new-checkout" in c["flags"] for c in story["changes"])


def test_ofrep(story: dict[str, Any]) -> None:
    ofrep = story["ofrep"]
    assert ofrep["one"] == (
        200,
        {"key": "banner", "value": "HELLO", "reason": "STATIC", "variant": "loud", "metadata": {}},
    )
    assert ofrep["missing"][0] == 404 and ofrep["missing"][1]["errorCode"] == "FLAG_NOT_FOUND"
    assert ofrep["no_key"] == 401
    assert {f["key"] for f in ofrep["bulk"]["flags"]} == {"banner", "new-checkout"}
    assert ofrep["bulk_again"] == 304


def test_thousands_of_clients_cost_the_server_nothing(story: dict[str, Any]) -> None:
    load = story["load"]
    assert load["statuses"] == {200: 2000, 304: 2000}
    # The relay holds its stream open; no SDK poll reaches upstream.
    assert load["upstream"] == 0


def test_outcomes_are_summed_by_the_relay_and_reach_the_judge(story: dict[str, Any]) -> None:
    outcomes = story["outcomes"]
    requests = sum(c[0] for c in outcomes["counts"].values())
    errors = sum(c[1] for c in outcomes["counts"].values())
    assert (requests, errors) == (50, 10)
    assert set(outcomes["counts"]) <= {"loud", "plain"}
    assert outcomes["forwards"] <= 2  # one per relay interval, not one per report


def test_cache_is_private_and_holds_no_token(story: dict[str, Any]) -> None:
    [path] = story["cache_files"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert story["token"] not in path.read_text()
    assert json.loads(json.loads(path.read_text())["body"])["env"] == "production"


def test_relay_serves_through_an_outage_and_a_restart(story: dict[str, Any]) -> None:
    assert story["during_outage"][0] == 200
    assert story["restarted"]["sets"]["production"]["source"] == "disk"
    assert story["restarted_answer"] == story["during_outage"]
    assert story["cold_sync"] is True
    assert story["cold_value"] == story["during_outage"][1]["value"]
