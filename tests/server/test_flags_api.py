"""Flags through the real API: changes on the ledger with actor, reason and diff; who may
change which environment; drift; the published set with ETag/304 and its push stream."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor.server.stack import Stack
from conveyor.store.records import NewEvent

from .support import Client, serve

CONFIG = """\
project: flagged
services:
  web:
    build: {run: "true", outputs: [app]}
    run: "true"
environments:
  staging: {}
  production: {}
segments:
  staff:
    when: [{attribute: email, op: ends_with, values: ["@corp.com"]}]
flags:
  new-checkout:
    description: one-page checkout
    environments:
      staging: {on: true}
      production:
        on: false
        rules: [{segments: [staff], serve: "on"}]
"""


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Stack, Client]]:
    with serve(tmp_path / "p", CONFIG) as both:
        yield both


def _token(client: Client, name: str, role: str, envs: list[str]) -> Client:
    body = {"name": name, "role": role, "environments": envs}
    answer = client.post("/api/v1/tokens", json_body=body)
    assert answer.status_code == 201, answer.text
    return client.as_(str(answer.json()["secret"]))


def test_change_flags_with_reasons_on_the_ledger(served: tuple[Stack, Client]) -> None:
    _, admin = served
    listed = admin.get("/api/v1/flags").json()["flags"]
    assert [f["key"] for f in listed] == ["new-checkout"]
    assert listed[0]["environments"]["production"]["on"] is False

    no_reason = admin.post(
        "/api/v1/flags/new-checkout/state",
        json_body={"env": "production", "on": True, "reason": " "},
    )
    assert no_reason.status_code == 400 and "reason" in no_reason.json()["message"]

    rolled = admin.post(
        "/api/v1/flags/new-checkout/rollout",
        json_body={"env": "production", "percentage": 25, "reason": "start the launch"},
    )
    assert rolled.status_code == 200, rolled.text
    shown = admin.get("/api/v1/flags/new-checkout").json()
    production = shown["definition"]["environments"]["production"]
    assert production["on"] is True and production["rollout"] == {"percentage": 25, "variant": "on"}
    assert shown["source"] == "live" and shown["drifted"] is True

    history = admin.get("/api/v1/flags/new-checkout/history").json()["events"]
    [event] = history
    assert event["actor"] == "admin@test" and event["env"] == "production"
    assert event["details"]["reason"] == "start the launch"
    paths = {c["path"] for c in event["details"]["diff"]}
    assert paths == {"environments.production.on", "environments.production.rollout"}

    bad = admin.post(
        "/api/v1/flags/new-checkout/rollout",
        json_body={"env": "production", "percentage": 25, "variant": "maybe", "reason": "x"},
    )
    assert bad.status_code == 400 and "not one of the flag's variants" in bad.json()["message"]
    unknown = admin.post(
        "/api/v1/flags/nope/state", json_body={"env": "staging", "on": True, "reason": "x"}
    )
    assert unknown.status_code == 404


def test_deployers_change_only_their_environments(served: tuple[Stack, Client]) -> None:
    _, admin = served
    staging = _token(admin, "sam", "deployer", ["staging"])
    viewer = _token(admin, "vera", "viewer", ["*"])
    body = {"env": "staging", "on": False, "reason": "pause in staging"}
    assert staging.post("/api/v1/flags/new-checkout/state", json_body=body).status_code == 200
    refused = staging.post(
        "/api/v1/flags/new-checkout/state", json_body={**body, "env": "production"}
    )
    assert refused.status_code == 403 and "production" in refused.json()["message"]
    assert staging.post("/api/v1/flags/new-checkout/kill", json_body=body).status_code == 403
    assert viewer.post("/api/v1/flags/new-checkout/state", json_body=body).status_code == 403
    assert viewer.get("/api/v1/flags/new-checkout").status_code == 200


def test_kill_switch_drift_and_reset(served: tuple[Stack, Client]) -> None:
    stack, admin = served
    killed = admin.post("/api/v1/flags/new-checkout/kill", json_body={"reason": "INC-42"})
    assert killed.status_code == 200, killed.text
    envs = admin.get("/api/v1/flags/new-checkout").json()["environments"]
    assert {env: s["on"] for env, s in envs.items()} == {"production": False, "staging": False}
    [event] = [e for e in stack.store.events() if e.kind == "flag.killed"]
    assert event.env is None and event.details["reason"] == "INC-42"

    drift = admin.get("/api/v1/flags/drift").json()["drift"]
    assert [d["key"] for d in drift] == ["new-checkout"]
    assert drift[0]["changes"] == [
        {"path": "environments.staging.on", "before": True, "after": False}
    ]
    # Turning it back on makes it equal to the file again: no live copy, no drift.
    admin.post(
        "/api/v1/flags/new-checkout/state",
        json_body={"env": "staging", "on": True, "reason": "INC-42 fixed"},
    )
    assert admin.get("/api/v1/flags/drift").json()["drift"] == []
    assert admin.get("/api/v1/flags/new-checkout").json()["source"] == "file"


def test_flagset_etag_and_push_stream(served: tuple[Stack, Client]) -> None:
    _, admin = served
    first = admin.get("/api/v1/flagsets/production")
    assert first.status_code == 200
    doc = first.json()
    assert doc["env"] == "production" and set(doc["segments"]) == {"staff"}
    etag = _etag(admin, "/api/v1/flagsets/production")
    again = admin.request("GET", "/api/v1/flagsets/production", headers={"if-none-match": etag})
    assert again.status_code == 304 and again.content == b""
    assert admin.get("/api/v1/flagsets/nowhere").status_code == 404

    received: list[dict[str, Any]] = []
    ready = threading.Event()

    def listen() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", admin.port, timeout=20)
        conn.request(
            "GET",
            "/api/v1/flagsets/production/stream",
            headers={"authorization": f"Bearer {admin.token}"},
        )
        response = conn.getresponse()
        assert response.status == 200
        data = b""
        while len(received) < 2:
            line = response.fp.readline()
            if line.startswith(b"data: "):
                data = line[6:]
            elif line == b"\n" and data:
                received.append(json.loads(data))
                data = b""
                ready.set()
        conn.close()

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    assert ready.wait(10)
    started = time.monotonic()
    admin.post(
        "/api/v1/flags/new-checkout/state",
        json_body={"env": "production", "on": True, "reason": "launch"},
    )
    thread.join(10)
    assert len(received) == 2
    assert received[1]["flags"]["new-checkout"]["environments"]["production"]["on"] is True
    assert time.monotonic() - started < 5
    assert _etag(admin, "/api/v1/flagsets/production") != etag


def _etag(client: Client, path: str) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", client.port, timeout=10)
    conn.request("GET", path, headers={"authorization": f"Bearer {client.token}"})
    response = conn.getresponse()
    response.read()
    conn.close()
    return str(response.getheader("etag"))


def test_flag_changes_are_in_the_audit_export(served: tuple[Stack, Client]) -> None:
    _, admin = served
    admin.post("/api/v1/flags/new-checkout/kill", json_body={"reason": "INC-9: checkout down"})
    lines = admin.get("/api/v1/audit?format=jsonl").text.splitlines()
    rows = [json.loads(line) for line in lines]
    [killed] = [r for r in rows if r.get("kind") == "flag.killed"]
    assert killed["actor"] == "admin@test"
    assert killed["summary"] == "flag new-checkout: kill: INC-9: checkout down"


def test_history_is_the_newest_of_the_flag_behind_a_long_ledger(
    served: tuple[Stack, Client],
) -> None:
    """History pages back from the end of the ledger: other flags' events, more than a page
    of them, neither hide this flag's newest change nor push out its oldest."""
    stack, admin = served
    body = {"env": "staging", "on": False, "reason": "first"}
    assert admin.post("/api/v1/flags/new-checkout/state", json_body=body).status_code == 200
    stack.store.append_events(
        [NewEvent("flag.changed", {"flag": "other", "n": n}) for n in range(2500)], actor="bulk"
    )
    body = {"env": "staging", "on": True, "reason": "second"}
    assert admin.post("/api/v1/flags/new-checkout/state", json_body=body).status_code == 200

    events = admin.get("/api/v1/flags/new-checkout/history").json()["events"]
    assert [e["details"]["reason"] for e in events] == ["first", "second"]
    newest = admin.get("/api/v1/flags/new-checkout/history?limit=1").json()["events"]
    assert [e["details"]["reason"] for e in newest] == ["second"]
