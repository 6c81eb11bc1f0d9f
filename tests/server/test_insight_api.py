"""Delivery insight through the real API: the Alertmanager receiver with a bearer token,
incidents by hand, and the DORA endpoint; the `conveyor dora` and `conveyor incident`
commands read what it answers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from conveyor.server.stack import Stack

from .support import Client, serve

CONFIG = """\
project: insight
services:
  shop:
    build: {run: "true", outputs: [app]}
    run: "true"
environments:
  staging:
  production:
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Client]]:
    with serve(tmp_path_factory.mktemp("insight"), CONFIG) as both:
        yield both


def _token(client: Client, name: str, role: str, envs: list[str]) -> Client:
    body = {"name": name, "role": role, "environments": envs}
    answer = client.post("/api/v1/tokens", json_body=body)
    assert answer.status_code == 201, answer.text
    return client.as_(answer.json()["secret"])


def _alert(status: str, fingerprint: str, env: str = "production") -> dict[str, object]:
    """One alert as Alertmanager 0.27's webhook sends it."""
    return {
        "status": status,
        "labels": {
            "alertname": "ShopErrorBudgetBurn",
            "service": "shop",
            "env": env,
            "severity": "page",
        },
        "annotations": {"summary": "shop burns its error budget 14.4x"},
        "startsAt": "2026-12-06T10:00:00.123456789Z",
        "endsAt": "2026-12-06T10:20:00Z" if status == "resolved" else "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph",
        "fingerprint": fingerprint,
    }


def _notification(status: str, *alerts: dict[str, object]) -> dict[str, object]:
    return {
        "version": "4",
        "groupKey": '{}:{alertname="ShopErrorBudgetBurn"}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "conveyor",
        "groupLabels": {"alertname": "ShopErrorBudgetBurn"},
        "commonLabels": {"alertname": "ShopErrorBudgetBurn"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": list(alerts),
    }


def test_alertmanager_opens_once_and_resolves(served: tuple[Stack, Client]) -> None:
    stack, admin = served
    alertmanager = _token(admin, "alertmanager", "deployer", ["production"])
    firing = _notification("firing", _alert("firing", "a1b2c3"))
    first = alertmanager.post("/api/v1/alertmanager", json_body=firing)
    assert first.status_code == 200, first.text
    [opened] = first.json()["opened"]
    again = alertmanager.post("/api/v1/alertmanager", json_body=firing).json()
    assert again == {"opened": [], "resolved": [], "ignored": 1}  # a repeat notification
    listed = admin.get("/api/v1/incidents").json()["incidents"]
    assert [(i["id"], i["title"], i["service"], i["env"], i["severity"]) for i in listed] == [
        (
            opened,
            "ShopErrorBudgetBurn: shop burns its error budget 14.4x",
            "shop",
            "production",
            "page",
        )
    ]
    assert listed[0]["opened_at"] == pytest.approx(1_796_551_200.123456)
    resolved = alertmanager.post(
        "/api/v1/alertmanager", json_body=_notification("resolved", _alert("resolved", "a1b2c3"))
    ).json()
    assert resolved == {"opened": [], "resolved": [opened], "ignored": 0}
    assert admin.get("/api/v1/incidents").json()["incidents"] == []
    [done] = admin.get("/api/v1/incidents?all=1").json()["incidents"]
    assert done["resolved_at"] - done["opened_at"] == pytest.approx(20 * 60 - 0.123456)
    events = [e for e in stack.store.events() if e.kind.startswith("incident.")]
    assert [(e.kind, e.actor) for e in events][-2:] == [
        ("incident.opened", "alertmanager"),
        ("incident.resolved", "alertmanager"),
    ]


def test_alertmanager_needs_a_token_allowed_where_the_alert_is(
    served: tuple[Stack, Client],
) -> None:
    _, admin = served
    body = _notification("firing", _alert("firing", "zz", env="production"))
    assert admin.as_(None).post("/api/v1/alertmanager", json_body=body).status_code == 401
    staging_only = _token(admin, "am-staging", "deployer", ["staging"])
    assert staging_only.post("/api/v1/alertmanager", json_body=body).status_code == 403
    viewer = _token(admin, "am-viewer", "viewer", ["*"])
    assert viewer.post("/api/v1/alertmanager", json_body=body).status_code == 403


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"alerts": "x"}, "'alerts' must be a list"),
        ({"alerts": [{"status": "odd", "labels": {}, "fingerprint": "f"}]}, "firing or resolved"),
        ({"alerts": [{"status": "firing", "labels": {}}]}, "fingerprint"),
        ({"alerts": [{"status": "firing", "labels": {"a": 1}, "fingerprint": "f"}]}, "labels"),
        (
            {
                "alerts": [
                    {"status": "firing", "labels": {}, "fingerprint": "f", "startsAt": "yesterday"}
                ]
            },
            "RFC 3339",
        ),
        ({"alerts": [_alert("firing", f"f{n}") for n in range(501)]}, "at most 500"),
    ],
)
def test_malformed_notifications_are_refused_clearly(
    served: tuple[Stack, Client], body: dict[str, object], message: str
) -> None:
    _, admin = served
    answer = admin.post("/api/v1/alertmanager", json_body=body)
    assert answer.status_code == 400, answer.text
    assert message in answer.json()["message"]


def test_incidents_by_hand_and_dora(served: tuple[Stack, Client]) -> None:
    _, admin = served
    opened = admin.post(
        "/api/v1/incidents",
        json_body={"title": "checkout slow", "service": "shop", "env": "staging"},
    )
    assert opened.status_code == 201, opened.text
    incident = opened.json()
    assert incident["source"] == "manual" and incident["release_id"] is None
    unknown = admin.post("/api/v1/incidents", json_body={"title": "x", "service": "nope"})
    assert unknown.status_code == 404 and "nope" in unknown.json()["message"]
    done = admin.post(f"/api/v1/incidents/{incident['id']}/resolve", json_body={"note": "ok"})
    assert done.status_code == 200 and done.json()["resolved_by"] == "admin@test"
    twice = admin.post(f"/api/v1/incidents/{incident['id']}/resolve", json_body={})
    assert twice.status_code == 409
    dora = admin.get("/api/v1/dora?env=production").json()
    assert dora["bands_from"] == "DORA Accelerate State of DevOps Report 2024"
    assert dora["total"]["deployment_frequency"] == {
        "deployments": 0,
        "per_day": 0.0,
        "per_week": 0.0,
        "band": "low",
    }
    assert dora["total"]["change_failure_rate"]["rate"] is None
    too_long = admin.get("/api/v1/dora?since=0&until=100000000")
    assert too_long.status_code == 400 and "at most 400 days" in too_long.json()["message"]
