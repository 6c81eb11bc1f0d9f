"""`conveyor dora` and `conveyor incident` against a stub API: what is asked, what is shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.core.dora import DeployKind, Deployment, compute
from tests.cli.canned import project
from tests.cli.stub_api import stub_api
from tests.cli.support import assert_clean_error, conveyor


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return project(tmp_path / "project")


def _report() -> dict[str, object]:
    day = 86400.0
    rows = [
        Deployment(1, "shop", "production", 1, DeployKind.DEPLOY, "succeeded", 10.0, 70.0),
        Deployment(2, "shop", "production", 2, DeployKind.DEPLOY, "succeeded", day, day + 60),
        Deployment(
            3, "shop", "production", 3, DeployKind.ROLLBACK, "succeeded", day + 600, day + 690
        ),
    ]
    return compute(rows, [], since=0.0, until=7 * day).to_json()


def test_dora_asks_for_the_period_and_shows_each_key_with_its_band(root: Path) -> None:
    with stub_api(root) as stub:
        stub.on("GET", "/api/v1/dora", (200, _report()))
        shown = conveyor("dora", "--since", "12w", root=root)
        as_json = conveyor("dora", "--service", "shop", "--env", "staging", "--json", root=root)
        [first, second] = stub.requests("GET", "/api/v1/dora")
    assert shown.code == 0, shown
    until, since = float(first.query["until"][0]), float(first.query["since"][0])
    assert until - since == 12 * 7 * 86400
    assert first.query["env"] == ["production"]
    assert second.query["env"] == ["staging"] and second.query["service"] == ["shop"]
    assert "DORA Accelerate State of DevOps Report 2024" in shown.stdout
    assert "50.0% (1/2) low" in shown.stdout  # change failure rate and its band
    assert "shop r2: rolled back by r3 (recovered in 1.5m)" in shown.stdout
    assert as_json.json()["total"]["rework_rate"]["rework"] == 1


@pytest.mark.parametrize("period", ["90", "0d", "3y", "-5d"])
def test_a_period_people_cannot_mean_is_refused(root: Path, period: str) -> None:
    with stub_api(root):
        result = conveyor("dora", "--since", period, root=root)
    assert_clean_error(result, 2)
    assert "36h, 90d, 12w" in result.stderr


def test_incident_open_resolve_list(root: Path) -> None:
    record = {
        "id": 4,
        "title": "checkout down",
        "source": "manual",
        "service": "shop",
        "env": "production",
        "fingerprint": None,
        "severity": "page",
        "opened_at": 100.0,
        "opened_by": "alice",
        "resolved_at": None,
        "resolved_by": None,
        "release_id": 9,
        "details": {},
    }
    with stub_api(root) as stub:
        stub.on("POST", "/api/v1/incidents", (201, record))
        stub.on("POST", "/api/v1/incidents/4/resolve", (200, {**record, "resolved_at": 220.0}))
        stub.on("GET", "/api/v1/incidents", (200, {"incidents": [record]}))
        opened = conveyor(
            "incident",
            "open",
            "checkout down",
            "--service",
            "shop",
            "--env",
            "production",
            "--severity",
            "page",
            root=root,
        )
        resolved = conveyor("incident", "resolve", "4", "--note", "rolled back", root=root)
        listed = conveyor("incident", "list", "--all", root=root)
        [posted] = stub.requests("POST", "/api/v1/incidents")
        [asked] = stub.requests("GET", "/api/v1/incidents")
    assert opened.code == 0 and "incident 4 opened (against release #9)" in opened.stdout
    assert posted.json() == {
        "title": "checkout down",
        "service": "shop",
        "env": "production",
        "severity": "page",
    }
    assert resolved.code == 0 and "resolved after 2.0m" in resolved.stdout
    assert listed.code == 0 and "checkout down" in listed.stdout and "#9" in listed.stdout
    assert asked.query["all"] == ["1"]


def test_slo_status_shows_budget_burn_and_alerts(root: Path) -> None:
    state = {
        "service": "shop",
        "env": "production",
        "slo": "availability",
        "indicator": "availability",
        "threshold": None,
        "source": "router",
        "objective": 0.999,
        "period": "28d",
        "error_ratio": 0.0025,
        "events": 10000.0,
        "covered": 3600.0,
        "budget_consumed": 2.5,
        "budget_remaining": -1.5,
        "exhausted": True,
        "burn_rates": {
            "5m": 30.0,
            "30m": 12.0,
            "1h": 8.0,
            "2h": 4.0,
            "6h": 2.5,
            "1d": 2.5,
            "3d": 2.5,
        },
        "firing": ["page", "ticket"],
    }
    with stub_api(root) as stub:
        stub.on("GET", "/api/v1/slos", (200, {"slos": [state]}))
        shown = conveyor("slo", "status", "--env", "production", root=root)
        [asked] = stub.requests("GET", "/api/v1/slos")
    assert shown.code == 0, shown
    assert asked.query == {"env": ["production"]}
    assert "-150.0% (exhausted)" in shown.stdout
    assert "30.0/8.0/2.5/2.5" in shown.stdout and "page, ticket" in shown.stdout
