"""The real `conveyor` command against a stub API: what reaches the server, what the user sees.

The integration stories (test_lifecycle.py and others) run a real server; these cases are
about the command line itself and need answers the real server gives rarely or never on
demand (an actor full of rich markup, a server bug, an unknown error).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.canned import DIGEST, event, project, release, serve_everything, status_row
from tests.cli.stub_api import StubApi, stub_api
from tests.cli.support import assert_clean_error, cli_env, conveyor

MARKUP = "[red]x[/]"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return project(tmp_path / "project")


def test_project_options_work_before_and_after_the_command(root: Path, tmp_path: Path) -> None:
    for args in (["-C", root, "validate"], ["validate", "-C", root]):
        result = conveyor(*args)
        assert result.code == 0, result
        assert "project 'stubbed'" in result.stdout
    (root / "other.yaml").write_text((root / "conveyor.yaml").read_text().replace("stubbed", "o"))
    other = conveyor("validate", "--file", "other.yaml", "-C", root, "--json")
    assert other.code == 0, other
    assert other.json()["project"] == "o"
    # Given twice, the one after the command wins.
    nowhere = tmp_path / "nowhere"
    assert conveyor("-C", nowhere, "validate", "-C", root).code == 0
    assert_clean_error(conveyor("-C", root, "validate", "-C", nowhere), 2)
    with stub_api(root) as stub:
        serve_everything(stub)
        for args in (["keys", "show", "-C", root], ["keys", "-C", root, "show"]):
            shown = conveyor(*args)
            assert shown.code == 0, shown
            assert "signing key k1 (ed25519)" in shown.stdout


def test_markup_from_the_server_is_printed_as_text(root: Path) -> None:
    """An actor, a service or a message may hold square brackets; rich must not read them."""
    with stub_api(root) as stub:
        serve_everything(stub, actor=MARKUP)
        stub.on(
            "GET",
            "/api/v1/status",
            (200, {"services": [status_row("[bold]api", phase="failed", message="[/] boom")]}),
        )
        stub.on(
            "GET",
            "/api/v1/events",
            (200, {"events": [event(1, "pipeline.started", MARKUP, run="[/x]")]}),
        )
        results = {
            "events": conveyor("events", root=root),
            "history": conveyor("history", "catalog", "--env", "staging", root=root),
            "status": conveyor("status", root=root),
            "deploy": conveyor("deploy", "catalog", "--env", "staging", "--wait", root=root),
        }
    for name, result in results.items():
        assert result.code == 0, (name, result)
        assert "Traceback" not in result.output
    assert MARKUP in results["events"].stdout and "run=[/x]" in results["events"].stdout
    assert MARKUP in results["history"].stdout
    assert "[bold]api" in results["status"].stdout and "[/] boom" in results["status"].stdout


def test_deploy_without_an_artifact_deploys_the_newest_build(root: Path) -> None:
    with stub_api(root) as stub:
        serve_everything(stub)
        result = conveyor("deploy", "catalog", "--env", "staging", "--set", "A=b", root=root)
        [asked] = stub.requests("GET", "/api/v1/artifacts")
        [created] = stub.requests("POST", "/api/v1/releases")
        stub.on("GET", "/api/v1/artifacts", (200, {"artifacts": []}))
        none = conveyor("deploy", "catalog", "--env", "staging", root=root)
    assert result.code == 0, result
    assert asked.query == {"service": ["catalog"], "limit": ["1"]}
    assert created.json() == {
        "service": "catalog",
        "env": "staging",
        "artifact": DIGEST,
        "set": {"A": "b"},
    }
    assert "release catalog/staging r4 created" in result.stdout
    assert_clean_error(none, 3)
    assert "catalog has no artifact yet" in none.stderr
    assert "`conveyor build catalog`" in none.stderr


def test_a_refusal_prints_message_and_hint_and_exits_with_its_code(root: Path) -> None:
    refused = {
        "error": "AlreadyDeployed",
        "kinds": ["AlreadyDeployed", "Conflict", "ConveyorError"],
        "message": "r3 already runs this artifact with this config in staging",
        "hint": "change something, or `conveyor rollback`",
        "exit_code": 4,
    }
    with stub_api(root) as stub:
        serve_everything(stub)
        stub.on("POST", "/api/v1/releases", (409, refused))
        args = ("deploy", "catalog", "--env", "staging", "--artifact", DIGEST)
        human = conveyor(*args, root=root)
        as_json = conveyor(*args, "--json", root=root)
    assert_clean_error(human, 4)
    assert f"error: {refused['message']}" in human.stderr
    assert f"hint: {refused['hint']}" in human.stderr
    assert as_json.code == 4
    assert as_json.json() == refused


def test_a_bug_says_so_without_a_traceback_unless_asked(root: Path) -> None:
    row = status_row("catalog")
    del row["phase"]  # a row without a field status draws
    broken = {"services": [row]}
    with stub_api(root) as stub:
        stub.on("GET", "/api/v1/status", (200, broken))
        plain = conveyor("status", root=root)
        as_json = conveyor("status", "--json", root=root)
        debug = conveyor("status", root=root, env=cli_env(CONVEYOR_DEBUG="1"))
    assert plain.code == 1, plain
    assert "error: this is a bug in Conveyor: KeyError: 'phase'" in plain.stderr
    assert "CONVEYOR_DEBUG=1" in plain.stderr
    assert "Traceback" not in plain.output
    assert as_json.code == 0  # --json prints the rows as they came: nothing to draw
    assert debug.code == 1
    assert "Traceback" in debug.stderr and "KeyError: 'phase'" in debug.stderr


def test_wait_exits_10_when_the_release_rolls_back(root: Path) -> None:
    with stub_api(root, StubApi()) as stub:
        serve_everything(stub)
        stub.on("GET", "/api/v1/releases/14", (200, release(phase="rolled_back", done=True)))
        stub.on(
            "GET",
            "/api/v1/events",
            (200, {"events": [event(1, "release.aborted", reason="error-rate", message="5%")]}),
        )
        result = conveyor(
            "deploy", "catalog", "--env", "staging", "--artifact", DIGEST, "--wait", root=root
        )
    assert result.code == 10, result
    assert "release.aborted error-rate: 5%" in result.stdout
    assert "catalog/staging r4: rolled_back" in result.stdout
