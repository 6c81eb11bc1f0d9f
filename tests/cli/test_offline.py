"""What users meet before a server runs: how to start one, and mistakes caught up front.

Every command that reads or changes the project's state is a client of its server, so
without one each says how to start it (exit 7) — and does no work first: `--build` must
not build for a release that cannot be created. A malformed command line is refused
before anything runs. Each error arrives as a message plus a hint with its documented
exit code, in both the human and the ``--json`` forms, and never as a traceback.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.controller.harness import write_project

from .support import assert_clean_error, conveyor

FAKE_DIGEST = "sha256:" + "0" * 64


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write_project(tmp_path, project="cli-offline")
    return tmp_path


def _artifacts(root: Path) -> list[str]:
    folder = root / ".conveyor" / "artifacts" / "sha256"
    return sorted(p.name for p in folder.glob("*.tar.gz")) if folder.exists() else []


@pytest.mark.parametrize(
    "args",
    [
        ["deploy", "catalog", "--env", "staging", "--artifact", FAKE_DIGEST],
        ["deploy", "catalog", "--env", "staging", "--build"],
        ["deploy", "catalog", "--env", "staging"],
        ["rollback", "catalog", "--env", "staging"],
        ["build", "catalog"],
        ["logs", "catalog", "--env", "staging"],
        ["keys", "show"],
        ["evidence", "catalog/staging"],
        ["history", "catalog", "--env", "staging"],
    ],
    ids=lambda args: "-".join(a for a in args if not a.startswith(("-", "sha256"))),
)
def test_without_a_server_each_command_says_how_to_start_one(
    project: Path, args: list[str]
) -> None:
    result = conveyor(*args, root=project)
    assert_clean_error(result, 7)
    assert "no Conveyor server is running" in result.stderr, result
    assert "`conveyor up`" in result.stderr, result
    assert _artifacts(project) == []  # nothing was built for nowhere
    assert not list((project / ".conveyor" / "builds").glob("*.log"))


def test_without_a_server_json_says_so_too(project: Path) -> None:
    js = conveyor("status", "--json", root=project)
    assert_clean_error(js, 7)
    body = js.json()
    assert body["error"] == "ServerUnavailable"
    assert body["exit_code"] == 7
    assert "`conveyor up`" in body["hint"]


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("GREETING", "--set expects KEY=VALUE, got 'GREETING'"),
        ("1BAD=x", "is not a valid environment variable name"),
    ],
)
def test_bad_set_is_refused_before_anything_runs(
    project: Path, assignment: str, message: str
) -> None:
    args = ["deploy", "catalog", "--env", "staging", "--build", "--set", assignment]
    human = conveyor(*args, root=project)
    assert_clean_error(human, 2)
    assert message in human.stderr, human
    assert "hint: for example --set GREETING=hello" in human.stderr, human
    assert _artifacts(project) == []  # refused before building
    if assignment == "GREETING":
        body = conveyor(*args, "--json", root=project).json()
        assert body == {
            "error": "UsageError",
            "kinds": ["UsageError", "InvalidInput", "ConveyorError"],
            "message": message,
            "hint": "for example --set GREETING=hello",
            "exit_code": 2,
        }


def test_artifact_and_build_together_is_a_usage_error(project: Path) -> None:
    result = conveyor(
        "deploy", "catalog", "--env", "staging", "--build", "--artifact", FAKE_DIGEST, root=project
    )
    assert_clean_error(result, 2)
    assert "give either --artifact or --build, not both" in result.stderr
