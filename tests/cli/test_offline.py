"""The commands that need no server (build, logs) and the errors users meet before one runs.

Each error must arrive as a message plus a hint with its documented exit code, in both the
human and the ``--json`` forms, and never as a traceback.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.artifacts.gitrepo import commit_all, git, init_repo
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


# --- no server ---------------------------------------------------------------------------


def test_deploy_without_a_server_says_how_to_start_one(project: Path) -> None:
    for args in (
        ["deploy", "catalog", "--env", "staging", "--artifact", FAKE_DIGEST],
        ["deploy", "catalog", "--env", "staging", "--build"],
        ["rollback", "catalog", "--env", "staging"],
    ):
        result = conveyor(*args, root=project)
        assert_clean_error(result, 7)
        assert "no Conveyor server is running" in result.stderr, result
        assert "`conveyor up`" in result.stderr, result
    # --build must not build for a release that cannot be created.
    assert _artifacts(project) == []

    js = conveyor("status", "--json", root=project)
    assert_clean_error(js, 7)
    body = js.json()
    assert body["error"] == "ServerUnavailable"
    assert "`conveyor up`" in body["hint"]


@pytest.mark.parametrize(
    ("args", "wrong", "meant"),
    [
        (["build", "catalg"], "unknown service 'catalg'", "did you mean 'catalog'?"),
        (["logs", "catalog", "--env", "stagin"], "unknown environment 'stagin'", "'staging'"),
        (["deploy", "catalg", "--env", "staging"], "unknown service 'catalg'", "'catalog'"),
    ],
    ids=["build", "logs-env", "deploy-latest-artifact"],
)
def test_unknown_names_suggest_the_right_one(
    project: Path, args: list[str], wrong: str, meant: str
) -> None:
    result = conveyor(*args, "--json", root=project)
    assert_clean_error(result, 3)
    body = result.json()
    assert body["error"] == "NotFound"
    assert wrong in body["message"]
    assert meant in body["hint"]


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
    assert_clean_error(human, 1)
    assert message in human.stderr, human
    assert "hint: for example --set GREETING=hello" in human.stderr, human
    assert _artifacts(project) == []  # refused before building
    if assignment == "GREETING":
        body = conveyor(*args, "--json", root=project).json()
        assert body == {
            "error": "ConveyorError",
            "message": message,
            "hint": "for example --set GREETING=hello",
        }


def test_logs_before_any_deploy(project: Path) -> None:
    human = conveyor("logs", "catalog", "--env", "staging", root=project)
    assert human.code == 0, human
    assert "no logs yet for catalog in staging" in human.stdout
    js = conveyor("logs", "catalog", "--env", "staging", "--json", root=project)
    assert js.json() == {"env": "staging", "instances": {}, "service": "catalog"}


# --- build -------------------------------------------------------------------------------


def _build(root: Path) -> dict[str, Any]:
    result = conveyor("build", "catalog", "--json", root=root)
    assert result.code == 0, result
    return result.json()  # type: ignore[no-any-return]


def test_build_is_reproducible_and_records_provenance(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    write_project(root, project="cli-build")
    init_repo(root)
    head = commit_all(root, "v1")

    first = _build(root)
    second = _build(root)
    digest = first["artifact"]["digest"]
    assert digest.startswith("sha256:") and len(digest) == len("sha256:") + 64
    assert first["reused"] is False
    assert second["reused"] is True
    assert second["artifact"] == first["artifact"]  # the record of the first build
    assert first["artifact"]["commit"] == head
    assert first["artifact"]["branch"] == "main"
    assert first["artifact"]["service"] == "catalog"
    assert Path(first["log"]).is_file()

    human = conveyor("build", "catalog", root=root)
    assert human.code == 0, human
    assert f"built catalog {digest} (unchanged, reused)" in human.stdout, human
    assert f"commit {head} on main" in human.stdout, human

    # The same sources elsewhere: the same bytes, whatever the directory or the time.
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(root / "services", elsewhere / "services")
    shutil.copy(root / "conveyor.yaml", elsewhere / "conveyor.yaml")
    assert _build(elsewhere)["artifact"]["digest"] == digest

    # A code change is a new artifact, recorded as built from a dirty tree.
    server = root / "services" / "catalog" / "app" / "server.py"
    server.write_text(server.read_text() + "\n# a change\n")
    changed = _build(root)
    assert changed["artifact"]["digest"] != digest
    assert changed["reused"] is False
    assert changed["artifact"]["dirty"] is True
    assert changed["artifact"]["commit"] == head
    assert len(_artifacts(root)) == 2


def test_build_of_a_clean_commit_is_not_dirty(tmp_path: Path) -> None:
    write_project(tmp_path, project="cli-clean")
    init_repo(tmp_path)
    commit_all(tmp_path, "v1")
    assert git(tmp_path, "status", "--porcelain") == ""
    assert _build(tmp_path)["artifact"]["dirty"] is False
