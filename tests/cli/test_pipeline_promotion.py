"""Build once, promote the same bytes: a pipeline that tests, scans, builds and deploys.

The real `conveyor` command, a real server (`conveyor up`), real instances and a git checkout
on main. Production requires a successful staging release of the same digest, the main
branch and two gates; the pipeline's deploy jobs ask for exactly that, and the server checks
the gates against the run's signed attestation. The story runs once per module and each test
asserts one behaviour on what it recorded:

1. `conveyor run`: test, secret-scan, audit (skipped: no offline database), package (build),
   staging and production deploys all go through; one artifact, deployed to both.
2. The same pipeline re-run on unchanged code: the deploys find their environments already
   there (success, nothing released twice).
3. Production now also requires the audit gate: the production deploy job fails with the
   refusal naming the gate, and `release.refused` is on the ledger.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.artifacts.gitrepo import commit_all, init_repo
from tests.controller.harness import write_project

from .support import Result, conveyor, processes_of

pytestmark = pytest.mark.integration
pytest.importorskip("detect_secrets", reason="the pipeline has a secret-scan gate")

PIPELINE = """
pipeline:
  jobs:
    test:
      run: >-
        python3 -m py_compile services/catalog/app/server.py &&
        echo '<testsuite name="t"><testcase name="a"/><testcase name="b"/>
        <testcase name="c"><skipped/></testcase></testsuite>' > junit.xml
      reports: {junit: [junit.xml]}
    secrets:
      gate: secret-scan
      paths: [services/]
    audit: {gate: audit}
    package:
      needs: [test, secrets]
      build: catalog
    staging:
      needs: [package]
      deploy: {env: staging}
    production:
      needs: [staging]
      deploy: {env: production}
"""
REQUIRES = "{environments: [staging], branches: [main], gates: [test, secrets]}"


@dataclass
class Story:
    root: Path
    runs: dict[str, Result] = field(default_factory=dict)

    def run(self, key: str, *args: str) -> Result:
        self.runs[key] = conveyor(*args, root=self.root, timeout=180)
        return self.runs[key]

    def __getitem__(self, key: str) -> Result:
        return self.runs[key]


def _jobs(result: Result) -> dict[str, dict[str, Any]]:
    return {job["name"]: job for job in result.json()["jobs"]}


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Story]:
    root = tmp_path_factory.mktemp("promote")
    name = f"cli-promote-{uuid.uuid4().hex[:8]}"
    config = write_project(
        root,
        instances=1,
        verification="0.5s",
        scale_down_delay="0.5s",
        project=name,
        requires={"production": REQUIRES},
    )
    config.write_text(config.read_text() + PIPELINE)
    (root / ".gitignore").write_text(".conveyor/\n__pycache__/\njunit.xml\n")
    init_repo(root)
    commit_all(root, "v1")
    story = Story(root)
    try:
        up = story.run("up", "up", "--json")
        if up.code == 0:
            story.run("first", "run", "--json")
            story.run("evidence", "evidence", "catalog/production", "--json")
            story.run("again", "run", "--json")
            config.write_text(config.read_text().replace("secrets]}", "secrets, audit]}"))
            commit_all(root, "production also requires the audit")
            story.run("audited", "run", "--json")
            story.run("events", "events", "--json")
            story.run("history", "history", "catalog", "--env", "production", "--json")
    finally:
        story.run("down", "down", "--json")
        deadline = time.monotonic() + 10
        while processes_of(root, name) and time.monotonic() < deadline:
            time.sleep(0.1)
    yield story


def test_the_pipeline_builds_once_and_promotes_the_same_bytes(story: Story) -> None:
    first = story["first"]
    assert first.code == 0, first
    jobs = _jobs(first)
    assert {name: job["result"] for name, job in jobs.items()} == {
        "test": "success",
        "secrets": "success",
        "audit": "skipped",
        "package": "success",
        "staging": "success",
        "production": "success",
    }
    digest = jobs["package"]["outputs"]["digest"]
    assert digest.startswith("sha256:")
    assert jobs["staging"]["outputs"]["digest"] == digest
    assert jobs["production"]["outputs"]["digest"] == digest
    assert jobs["production"]["outputs"]["release"] == "catalog/production r1"
    history = story["history"].json()
    assert [r["artifact_digest"] for r in history] == [digest]


def test_a_rerun_on_unchanged_code_finds_every_environment_already_there(story: Story) -> None:
    again = story["again"]
    assert again.code == 0, again
    jobs = _jobs(again)
    assert jobs["package"]["outputs"]["reused"] == "true"
    assert jobs["staging"]["outputs"]["phase"] == "unchanged"
    assert jobs["production"]["outputs"]["phase"] == "unchanged"
    assert "nothing to deploy" in jobs["production"]["log"]


def test_production_refuses_an_artifact_whose_required_gate_was_skipped(story: Story) -> None:
    audited = story["audited"]
    assert audited.code == 1, audited
    jobs = _jobs(audited)
    assert jobs["staging"]["result"] == "success"
    production = jobs["production"]
    assert production["result"] == "failure"
    assert "gate 'audit' did not pass (skipped)" in production["reason"]
    refused = [e for e in story["events"].json() if e["kind"] == "release.refused"]
    assert len(refused) == 1
    assert refused[0]["env"] == "production"
    assert refused[0]["details"]["unmet"] == ["gate 'audit' did not pass (skipped)"]


def test_every_run_and_attestation_is_on_the_ledger(story: Story) -> None:
    events = story["events"].json()
    kinds = [e["kind"] for e in events]
    assert kinds.count("pipeline.started") == kinds.count("pipeline.finished") == 3
    finished = [e["details"] for e in events if e["kind"] == "pipeline.finished"]
    assert [f["result"] for f in finished] == ["success", "success", "failure"]
    first = _jobs(story["first"])
    digest = first["package"]["outputs"]["digest"]
    assert finished[0]["artifacts"] == {digest: "catalog"}
    attested = [e["details"] for e in events if e["kind"] == "artifact.attested"]
    # Per run: after the build, before each deploy, and the final word at the end.
    assert len(attested) == 4 * 3
    assert all(a["artifact"] == digest for a in attested)
    assert {"test", "secrets"} <= set(attested[0]["passed"])
    # The attestation before production's deploy already carries staging's success.
    before_production = [a for a in attested if "staging" in a["passed"]]
    assert before_production, attested


def test_the_release_evidence_shows_the_signed_checks_behind_it(story: Story) -> None:
    evidence = story["evidence"]
    assert evidence.code == 0, evidence
    report = evidence.json()
    assert report["gates"]["test"] == "success" and report["gates"]["secrets"] == "success"
    assert report["requirements"]["unmet"] == []
    jobs = {job["name"]: job for job in report["attestations"]["runs"][-1]["jobs"]}
    assert jobs["test"]["summary"] == "junit 3 tests, 0 failures, 0 errors, 1 skipped"
    assert jobs["secrets"]["gate"] == "secret-scan"
    assert jobs["audit"]["result"] == "skipped"
    # The build's own signed provenance names the run and what had passed before it.
    first = story["first"].json()
    provenance = report["provenance"]
    assert provenance["pipeline_run"] == first["id"]
    assert {"test": "success", "secrets": "success"}.items() <= provenance["pipeline_jobs"].items()
    assert report["integrity"]["bytes_ok"] and report["integrity"]["signature_ok"]
