"""`conveyor run` and `conveyor export` through the real command, on real files and git."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from tests.cli.support import assert_clean_error, cli_env, conveyor

PROJECT = """\
project: svc
services:
  api:
    build: {run: "true", outputs: [out/]}
    run: "true"
environments:
  dev:
"""

PIPELINE = """\
pipeline:
  jobs:
    lint: {run: "echo linting > lint.txt"}
    test:
      needs: [lint]
      run: "echo token=$TOKEN; exit ${FAIL:-0}"
      secrets: {TOKEN: {env: MY_TOKEN}}
      matrix: {py: ["3.11", "3.12"]}
      env: {FAIL: "{{ vars.fail }}"}
    build: {needs: [test], run: "echo built > built.txt"}
    release: {needs: [build], if: "branch == 'main'", run: "echo released > released.txt"}
  vars: {fail: "0"}
"""


def project(tmp_path: Path, pipeline: str = PIPELINE) -> Path:
    (tmp_path / "conveyor.yaml").write_text(PROJECT + pipeline)
    return tmp_path


def git(root: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args],
        cwd=root,
        check=True,
        capture_output=True,
    )


def test_run_succeeds_shows_the_dag_and_keeps_a_record(tmp_path: Path) -> None:
    root = project(tmp_path)
    result = conveyor("run", root=root, env=cli_env(MY_TOKEN="s3cr3t-value"))
    assert result.code == 0, result
    for job in ("lint", "test[py=3.11]", "test[py=3.12]", "build", "release"):
        assert job in result.stdout
    assert "pipeline success" in result.stdout
    assert (root / "built.txt").exists()
    assert not (root / "released.txt").exists()  # no git here: branch unknown, release skipped
    (record,) = (root / ".conveyor" / "runs").glob("*.json")
    data = json.loads(record.read_text())
    assert data["run"]["result"] == "success"
    assert "s3cr3t-value" not in record.read_text()
    assert record.stat().st_mode & 0o777 == 0o600  # job output: its owner's eyes only
    # No server: the run still runs, and says what it could not record.
    assert "this run is not on the ledger: no Conveyor server is running" in result.stdout
    assert data["problems"] == [
        f"this run is not on the ledger: no Conveyor server is running for {root.resolve()}"
    ]


def test_failure_exits_non_zero_prints_the_masked_tail_and_stops(tmp_path: Path) -> None:
    root = project(tmp_path)
    result = conveyor("run", "--var", "fail=3", root=root, env=cli_env(MY_TOKEN="s3cr3t-value"))
    assert result.code == 1, result
    assert "token=***" in result.stdout
    assert "exit 3" in result.stdout
    assert "s3cr3t-value" not in result.output
    assert not (root / "built.txt").exists()
    (record,) = (root / ".conveyor" / "runs").glob("*.json")
    assert "s3cr3t-value" not in record.read_text()
    assert json.loads(record.read_text())["run"]["result"] == "failure"


def test_json_output_is_the_run_result(tmp_path: Path) -> None:
    root = project(tmp_path)
    result = conveyor("run", "--json", "--until", "test", root=root, env=cli_env(MY_TOKEN="x"))
    assert result.code == 0, result
    data = result.json()
    assert data["result"] == "success"
    assert [job["name"] for job in data["jobs"]] == ["lint", "test[py=3.11]", "test[py=3.12]"]


def test_job_runs_alone_like_a_ci_step(tmp_path: Path) -> None:
    root = project(tmp_path)
    result = conveyor("run", "--json", "--job", "build", root=root)
    assert result.code == 0, result
    assert [job["name"] for job in result.json()["jobs"]] == ["build"]
    assert not (root / "lint.txt").exists()


def test_branch_comes_from_git_and_the_flag_overrides_it(tmp_path: Path) -> None:
    root = project(tmp_path)
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "conveyor.yaml")
    git(root, "commit", "-q", "-m", "init")
    result = conveyor("run", "--json", root=root, env=cli_env(MY_TOKEN="x"))
    assert result.code == 0, result
    assert (root / "released.txt").exists()
    (root / "released.txt").unlink()
    result = conveyor("run", "--json", "--branch", "feature", root=root, env=cli_env(MY_TOKEN="x"))
    assert result.code == 0, result
    release = [job for job in result.json()["jobs"] if job["name"] == "release"]
    assert release[0]["result"] == "skipped"


def test_unknown_job_and_missing_pipeline_are_clean_errors(tmp_path: Path) -> None:
    root = project(tmp_path)
    result = conveyor("run", "--job", "deploy", root=root)
    assert_clean_error(result, 2)
    assert "known jobs: lint, test, build, release" in result.output
    project(tmp_path, pipeline="")
    assert_clean_error(conveyor("run", root=root), 2)


def test_template_errors_are_located_in_the_template(tmp_path: Path) -> None:
    (tmp_path / "t.yaml").write_text("jobs:\n  a:\n    run: 'true'\n    retries: lots\n")
    root = project(tmp_path, pipeline="pipeline: {extends: t.yaml}\n")
    result = conveyor("run", root=root)
    assert_clean_error(result, 2)
    assert "t.yaml:4" in result.output


def test_export_mirrors_the_dag(tmp_path: Path) -> None:
    root = project(tmp_path)
    for kind, name in (("github-actions", "ci.yml"), ("gitlab-ci", ".gitlab-ci.yml")):
        result = conveyor("export", kind, "-o", str(root / name), root=root)
        assert result.code == 0, result
    github = YAML(typ="safe").load((root / "ci.yml").read_text())
    gitlab = YAML(typ="safe").load((root / ".gitlab-ci.yml").read_text())
    expected = {"lint": [], "test": ["lint"], "build": ["test"], "release": ["build"]}
    assert {name: job.get("needs", []) for name, job in github["jobs"].items()} == expected
    assert {name: gitlab[name]["needs"] for name in expected} == expected
    assert github["jobs"]["test"]["steps"][-1] == {"run": "conveyor run --job test"}
    assert github["jobs"]["test"]["env"] == {"MY_TOKEN": "${{ secrets.MY_TOKEN }}"}
    assert gitlab["build"]["script"][-1] == "conveyor run --job build"


def test_init_creates_a_service_that_extends_the_template_and_runs(tmp_path: Path) -> None:
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "t.yaml").write_text("jobs:\n  hello: {run: 'echo hi > hi.txt'}\n")
    result = conveyor(
        "init", "--template", str(tmp_path / "shared" / "t.yaml"), "orders", root=tmp_path
    )
    assert result.code == 0, result
    config = (tmp_path / "orders" / "conveyor.yaml").read_text()
    assert "extends: ../shared/t.yaml" in config
    assert conveyor("run", root=tmp_path / "orders").code == 0
    assert (tmp_path / "orders" / "hi.txt").exists()
    again = conveyor(
        "init", "--template", str(tmp_path / "shared" / "t.yaml"), "orders", root=tmp_path
    )
    assert_clean_error(again, 1)
    (tmp_path / "bad.yaml").write_text("jobs: {a: {needs: 3}}\n")
    bad = conveyor("init", "--template", str(tmp_path / "bad.yaml"), "billing", root=tmp_path)
    assert_clean_error(bad, 2)
    assert not (tmp_path / "billing").exists()


GATES = """\
pipeline:
  jobs:
    scan: {gate: secret-scan, paths: [src]}
    audit: {gate: audit}
    test: {run: "echo ok"}
"""


def test_evidence_latest_shows_gate_findings_and_the_skipped_audit(tmp_path: Path) -> None:
    pytest.importorskip("detect_secrets", reason="needs detect-secrets: pip install detect-secrets")
    root = project(tmp_path, GATES)
    (root / "src").mkdir()
    key = "AKIA" + "Z3MHQW7XJ4PLKD2Q"  # assembled so this file is no finding itself
    (root / "src" / "config.py").write_text(f'KEY = "{key}"\n')
    env = cli_env()
    env.pop("CONVEYOR_AUDIT_SOURCE", None)
    ran = conveyor("run", root=root, env=env)
    assert ran.code == 1, ran
    assert "src/config.py:1: AWS Access Key" in ran.stdout
    assert key not in ran.stdout + ran.stderr
    (record,) = (root / ".conveyor" / "runs").glob("*.json")
    assert key not in record.read_text()

    shown = conveyor("evidence", "latest", "--json", root=root)
    assert shown.code == 0, shown
    data = shown.json()
    assert data["run"] == record.stem and data["result"] == "failure"
    jobs = {job["name"]: job for job in data["jobs"]}
    scan = jobs["scan"]
    assert scan["result"] == "failure" and scan["gate"]["checked"] == ["src"]
    (finding,) = scan["gate"]["findings"]
    assert (finding["file"], finding["line"], finding["detector"], finding["level"]) == (
        "src/config.py",
        1,
        "AWS Access Key",
        "error",
    )
    assert jobs["audit"]["result"] == "skipped"
    assert jobs["audit"]["gate"]["summary"] == (
        "no offline vulnerability database; pip-audit needs network"
    )
    assert jobs["test"]["attempts"] == 1 and jobs["test"]["gate"] is None
    assert key not in shown.stdout

    text = conveyor("evidence", record.stem, root=root)
    assert text.code == 0, text
    assert "gate secret-scan: 1 files scanned, 1 possible secrets" in text.stdout
    assert "src/config.py:1 AWS Access Key" in text.stdout


def test_evidence_for_an_unknown_run_is_a_clean_error(tmp_path: Path) -> None:
    root = project(tmp_path)
    missing = conveyor("evidence", "latest", root=root)
    assert_clean_error(missing, 1)
    assert "no pipeline runs recorded" in missing.output
    assert conveyor("run", "--job", "lint", root=root).code == 0
    unknown = conveyor("evidence", "nope", root=root)
    assert_clean_error(unknown, 1)
    assert "no pipeline run 'nope'" in unknown.output and "hint: pass 'latest'" in unknown.output
