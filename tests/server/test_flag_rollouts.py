"""Guarded flag rollouts through the real API: steps walked on healthy outcomes, the flag
turned off (with the judge's evidence on the ledger) when the variant fails more."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor.server.stack import Stack

from .support import Client, serve

CONFIG = """\
project: guarded
services:
  web:
    build: {run: "true", outputs: [app]}
    run: "true"
environments:
  production: {}
flags:
  healthy:
    environments: {production: {on: false}}
  broken:
    environments: {production: {on: false}}
"""


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Stack, Client]]:
    with serve(tmp_path / "p", CONFIG) as both:
        yield both


def _start(admin: Client, key: str) -> dict[str, Any]:
    answer = admin.post(
        f"/api/v1/flags/{key}/guarded",
        json_body={
            "env": "production",
            "steps": [10, 50, 100],
            "interval": 1,
            "reason": "guarded launch",
        },
    )
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


def _report(admin: Client, key: str, on: tuple[int, int], off: tuple[int, int]) -> None:
    rows = [
        {"env": "production", "flag": key, "variant": "on", "requests": on[0], "errors": on[1]},
        {"env": "production", "flag": key, "variant": "off", "requests": off[0], "errors": off[1]},
    ]
    answer = admin.post("/api/v1/flags/outcomes", json_body={"counts": rows})
    assert answer.status_code == 202, answer.text


def _percentage(admin: Client, key: str) -> int | None:
    state = admin.get(f"/api/v1/flags/{key}").json()["definition"]["environments"]["production"]
    return state["rollout"]["percentage"] if state["on"] else None


def test_a_healthy_variant_is_walked_to_100(served: tuple[Stack, Client]) -> None:
    stack, admin = served
    started = _start(admin, "healthy")
    assert started["phase"] == "running" and _percentage(admin, "healthy") == 10
    published = admin.get("/api/v1/flagsets/production").json()
    assert published["guarded"] == ["healthy"]
    seen = []
    for _ in range(3):
        _report(admin, "healthy", (500, 2), (4500, 20))
        time.sleep(1.05)
        seen.append(stack.app.flag_rollouts.tick())
    assert [s for s in seen] == [["advance"], ["advance"], ["complete"]]
    assert _percentage(admin, "healthy") == 100
    [rollout] = admin.get("/api/v1/flag-rollouts?flag=healthy").json()["rollouts"]
    assert rollout["phase"] == "completed"
    assert rollout["status"]["counts"] == {"off": [13500, 60], "on": [1500, 6]}
    kinds = [e["kind"] for e in admin.get("/api/v1/flags/healthy/history").json()["events"]]
    assert kinds == [
        "flag.rollout.started",
        "flag.rollout.step",
        "flag.rollout.step",
        "flag.rollout.step",
        "flag.rollout.completed",
    ]


def test_a_variant_that_fails_more_is_turned_off(served: tuple[Stack, Client]) -> None:
    stack, admin = served
    _start(admin, "broken")
    _report(admin, "broken", (400, 60), (3600, 36))
    assert stack.app.flag_rollouts.tick() == ["abort"]
    assert _percentage(admin, "broken") is None  # off
    [aborted] = [e for e in stack.store.events() if e.kind == "flag.rollout.aborted"]
    assert aborted.actor == "conveyor" and aborted.env == "production"
    assert aborted.details["verdict"] == "fail"
    assert aborted.details["evidence"]["canary_errors"] == 60
    assert aborted.details["evidence"]["stable_requests"] == 3600


def test_bad_requests_are_refused(served: tuple[Stack, Client]) -> None:
    _, admin = served
    bad = admin.post(
        "/api/v1/flags/healthy/guarded",
        json_body={"env": "production", "steps": [50, 10], "reason": "x"},
    )
    assert bad.status_code == 400 and "grow" in bad.json()["message"]
    unknown = admin.post(
        "/api/v1/flags/healthy/guarded",
        json_body={"env": "production", "steps": [1, 10], "analysis": "latency", "reason": "x"},
    )
    assert unknown.status_code == 400 and "unknown analysis" in unknown.json()["message"]
    lying = admin.post(
        "/api/v1/flags/outcomes",
        json_body={
            "counts": [
                {
                    "env": "production",
                    "flag": "healthy",
                    "variant": "on",
                    "requests": 1,
                    "errors": 5,
                }
            ]
        },
    )
    assert lying.status_code == 400
