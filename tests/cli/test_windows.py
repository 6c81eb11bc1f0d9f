"""`conveyor windows` and a deploy refused by a window, against a real server.

The windows are chosen to give the same answer on any day of this century: production is
frozen until 2099, staging has no window, and in dev one service has a nightly allow window
(so dev shows a row per service). The command itself must stay a thin client: it loads
nothing heavy (checked against a stub API, as tests/cli/test_structure.py does for the rest).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.cli.canned import project, serve_everything
from tests.cli.stub_api import stub_api
from tests.cli.test_structure import HEAVY, NOT_FOR_A_CLIENT, loaded, probe
from tests.controller.harness import write_project

from .support import Result, assert_clean_error, cli_env, conveyor

WINDOWS = """\
windows:
  - name: long-freeze
    kind: deny
    from: 2020-01-01T00:00
    to: 2099-01-01T00:00
    timezone: Europe/Berlin
    environments: [production]
    reason: nothing ships to production this century
  - name: web-nights
    kind: allow
    schedule: "0 1 * * *"
    duration: 1h
    timezone: America/New_York
    environments: [dev]
    services: [web]
"""
WEB = """\
  web:
    path: services/catalog
    build: {run: "true", outputs: [app, VERSION]}
    run: "exec python3 app/server.py"
"""
OPENS = "Thu 2099-01-01 00:00 CET (Europe/Berlin), Wed 2098-12-31 23:00 UTC"


def windowed_project(root: Path) -> Path:
    config = write_project(root, project="windowscli", instances=1)
    text = config.read_text().replace("services:\n", "services:\n" + WEB, 1)
    config.write_text(text + WINDOWS)
    return config


def rows_of(result: Result) -> dict[tuple[str, tuple[str, ...]], dict[str, Any]]:
    assert result.code == 0, result
    return {(row["env"], tuple(row["services"])): row for row in result.json()["rows"]}


@pytest.mark.integration
def test_windows_and_a_refused_deploy_through_the_real_server(tmp_path: Path) -> None:
    windowed_project(tmp_path)
    assert conveyor("up", root=tmp_path).code == 0
    try:
        rows = rows_of(conveyor("windows", "--json", root=tmp_path))
        assert set(rows) == {
            ("staging", ("web", "catalog")),
            ("production", ("web", "catalog")),
            ("dev", ("web",)),
            ("dev", ("catalog",)),
            ("canary", ("web", "catalog")),
            ("haproxy", ("web", "catalog")),
        }
        frozen = rows[("production", ("web", "catalog"))]
        assert (frozen["open"], frozen["why"], frozen["window"], frozen["every_service"]) == (
            False,
            "deny",
            "long-freeze",
            True,
        )
        assert frozen["reason"] == "nothing ships to production this century"
        assert frozen["opens"]["text"] == OPENS
        assert frozen["opens"]["utc"] == "2098-12-31T23:00:00Z"
        assert frozen["opens"]["local"] == "2099-01-01T00:00:00+01:00"
        free = rows[("staging", ("web", "catalog"))]
        assert (free["open"], free["why"], free["opens"], free["closes"], free["known_until"]) == (
            True,
            "no-window",
            None,
            None,
            None,
        )
        nights = rows[("dev", ("web",))]
        assert nights["every_service"] is False and nights["window"] == "web-nights"
        change = nights["closes"] if nights["open"] else nights["opens"]
        assert change["timezone"] == "America/New_York"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT0[12]:00:00-0[45]:00", change["local"]), change

        text = conveyor("windows", root=tmp_path)
        assert text.code == 0, text
        for words in ("deploys now", "production", "closed", "long-freeze", "no window applies"):
            assert words in text.stdout, (words, text)
        assert "web-nights" in text.stdout and "America/New_York" in text.stdout

        one = conveyor(
            "windows", "--env", "production", "--service", "catalog", "--json", root=tmp_path
        )
        assert list(rows_of(one)) == [("production", ("catalog",))]
        assert [w["name"] for w in one.json()["windows"]] == ["long-freeze"]
        assert one.json()["rows"][0]["every_service"] is False

        assert_clean_error(conveyor("windows", "--env", "prod", root=tmp_path), 3)

        # A viewer may ask.
        made = conveyor("tokens", "create", "vera", "--role", "viewer", "--json", root=tmp_path)
        assert made.code == 0, made
        viewer = cli_env(CONVEYOR_TOKEN=made.json()["secret"])
        assert conveyor("windows", "--json", root=tmp_path, env=viewer).code == 0

        refused = conveyor("deploy", "catalog", "--env", "production", "--build", root=tmp_path)
        assert_clean_error(refused, 5)
        assert (
            "catalog may not be deployed to production now: deny window 'long-freeze' "
            "(2020-01-01T00:00 to 2099-01-01T00:00, Europe/Berlin) is in force: nothing ships "
            "to production this century"
        ) in refused.output
        assert f"deploys open again {OPENS}" in refused.output
        events = conveyor("events", "--env", "production", "--json", root=tmp_path)
        [event] = [e for e in events.json() if e["kind"] == "release.refused"]
        assert event["details"]["window"] == "long-freeze"
        assert event["service"] == "catalog"

        assert conveyor("deploy", "catalog", "--env", "staging", root=tmp_path).code == 0

        # The emergency path (an admin, as no access: policy is applied) overrides the
        # freeze, and its record names the window it overrode.
        emergency = conveyor(
            "deploy",
            "catalog",
            "--env",
            "production",
            "--emergency",
            "--reason",
            "INC-42",
            root=tmp_path,
        )
        assert emergency.code == 0, emergency
        events = conveyor("events", "--env", "production", "--json", root=tmp_path)
        [override] = [e for e in events.json() if e["kind"] == "emergency.override"]
        assert override["details"]["reason"] == "INC-42"
        assert override["details"]["window"]["window"] == "long-freeze"
    finally:
        conveyor("down", root=tmp_path)


def test_the_command_loads_nothing_heavy(tmp_path: Path) -> None:
    root = project(tmp_path / "p")
    with stub_api(root) as stub:
        serve_everything(stub)
        stub.on("GET", "/api/v1/windows", (200, CANNED))
        for args in (["windows"], ["windows", "--json"], ["windows", "--env", "staging"]):
            code, modules, output = probe(tmp_path, "-C", str(root), *args)
            assert code == 0, (args, output)
            assert loaded(modules, HEAVY) == [], args
            assert loaded(modules, NOT_FOR_A_CLIENT) == [], args
    assert [s.query for s in stub.seen if s.path == "/api/v1/windows"][-1] == {"env": ["staging"]}


MOMENT = {
    "at": 4070905200.0,
    "utc": "2098-12-31T23:00:00Z",
    "local": "2099-01-01T00:00:00+01:00",
    "timezone": "Europe/Berlin",
    "text": OPENS,
}
CANNED = {
    "rows": [
        {
            "env": "staging",
            "services": ["catalog"],
            "every_service": True,
            "open": False,
            "why": "deny",
            "why_text": "deny window",
            "window": "long-freeze",
            "reason": "[not] markup",
            "opens": {**MOMENT, "window": "long-freeze"},
            "closes": None,
            "known_until": None,
        }
    ],
    "windows": [
        {
            "name": "long-freeze",
            "kind": "deny",
            "schedule": None,
            "duration": None,
            "duration_text": None,
            "from": MOMENT,
            "to": MOMENT,
            "timezone": "Europe/Berlin",
            "environments": [],
            "services": [],
            "reason": "[not] markup",
        }
    ],
}
