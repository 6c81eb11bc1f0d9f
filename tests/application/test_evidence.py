"""Release evidence through the real stack: what was checked about a release, read back.

A real build (signed provenance), a real signed pipeline-run attestation, a real rollout; the
evidence must then show the signature's key, the attested gates, the requirements evaluated
now and the rollout's ledger events. Tampered bytes are reported, not raised. The resolver
is exercised against a real store.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from conveyor.application import Caller
from conveyor.application.evidence import (
    ReleaseRef,
    find_release,
    parse_release_reference,
    release_evidence,
)
from conveyor.artifacts.attestations import JobVerdict, RunFacts, attest_run
from conveyor.artifacts.signing import Keyring
from conveyor.artifacts.store import ArtifactStore
from conveyor.config.loader import load_project
from conveyor.core.state import Phase
from conveyor.errors import NotFound
from conveyor.store.records import ArtifactRecord
from conveyor.store.repository import Store

from ..controller.harness import Stack, run, stack, write_project
from ..store.helpers import new_release

pytestmark = pytest.mark.integration

GATES = {"staging": "{gates: [scan, test]}"}


def facts(run_id: str, scan: str = "success", recorded: float | None = None) -> RunFacts:
    return RunFacts(
        run=run_id,
        pipeline="ci",
        branch="main",
        tag=None,
        commit="abc123",
        recorded=time.time() if recorded is None else recorded,
        jobs=(
            JobVerdict("scan", scan, gate="secret-scan", summary="3 files scanned, 0 secrets"),
            JobVerdict("test[python=3.12]", "success"),
            JobVerdict("test[python=3.13]", "success"),
        ),
    )


async def deployed(s: Stack) -> tuple[str, int]:
    digest = await s.build("v1")
    attest_run(s.artifacts, digest, "catalog", facts("run-1"))
    release = await s.wait(await s.deploy("staging", digest))
    assert release.phase == "succeeded", release.status
    return digest, release.id


def test_evidence_shows_signature_gates_requirements_and_the_rollout(
    tmp_path: Path, database_url: str
) -> None:
    async def scenario() -> None:
        async with stack(tmp_path, database_url, instances=1, requires=GATES) as s:
            digest, release_id = await deployed(s)
            release = s.store.get_release(release_id)
            evidence = s.app.evidence(Caller("t"), str(release.id))

            assert evidence["release"]["name"] == "catalog/staging r1"
            assert evidence["release"]["phase"] == "succeeded"
            assert evidence["release"]["actor"] == "test"
            assert evidence["artifact"]["digest"] == digest
            assert evidence["artifact"]["build_command"] == "true"
            key = Keyring.of(s.artifacts).current().fingerprint
            assert evidence["integrity"] == {
                "bytes_ok": True,
                "bytes_problem": None,
                "signature_ok": True,
                "signed_by": key,
                "signature_problem": None,
            }
            assert evidence["provenance"]["builder"] == "conveyor"
            assert evidence["provenance"]["pipeline_run"] is None  # built outside a run
            (attested,) = evidence["attestations"]["runs"]
            assert attested["run"] == "run-1" and attested["branch"] == "main"
            assert attested["commit"] == "abc123"
            assert attested["jobs"][0] == {
                "name": "scan",
                "result": "success",
                "reason": None,
                "gate": "secret-scan",
                "summary": "3 files scanned, 0 secrets",
            }
            assert evidence["attestations"]["rejected"] == 0
            assert evidence["gates"] == {"scan": "success", "test": "success"}
            requirements = evidence["requirements"]
            assert requirements["evaluated"] == "now"
            assert requirements["declared"]["gates"] == ["scan", "test"]
            assert requirements["unmet"] == []
            kinds = [e["kind"] for e in evidence["events"]]
            assert kinds[0] == "release.created" and "release.succeeded" in kinds
            assert [e["seq"] for e in evidence["events"]] == sorted(
                e["seq"] for e in evidence["events"]
            )
            json.dumps(evidence)  # JSON-ready as it is

            # Requirements are evaluated now: a later run failing the scan shows up as unmet,
            # while the ledger still says the release succeeded.
            attest_run(s.artifacts, digest, "catalog", facts("run-2", scan="failure"))
            later = s.app.evidence(Caller("t"), str(release.id))
            assert [r["run"] for r in later["attestations"]["runs"]] == ["run-1", "run-2"]
            assert later["gates"]["scan"] == "failure"
            assert later["requirements"]["unmet"] == ["gate 'scan' did not pass (failure)"]

            # A run attests several times (as it builds, deploys, ends): one row per run,
            # its last word.
            attest_run(s.artifacts, digest, "catalog", facts("run-2", scan="success"))
            again = s.app.evidence(Caller("t"), str(release.id))
            assert [r["run"] for r in again["attestations"]["runs"]] == ["run-1", "run-2"]
            assert again["attestations"]["runs"][1]["jobs"][0]["result"] == "success"

    run(scenario())


def test_tampered_bytes_and_forged_lines_are_reported_not_raised(
    tmp_path: Path, database_url: str
) -> None:
    async def scenario() -> None:
        async with stack(tmp_path, database_url, instances=1, requires=GATES) as s:
            digest, release_id = await deployed(s)
            archive = s.artifacts.path(digest)
            archive.chmod(0o644)
            data = bytearray(archive.read_bytes())
            data[len(data) // 2] ^= 0x01
            archive.write_bytes(bytes(data))
            with (archive.parent / f"{digest.removeprefix('sha256:')}.attestations.jsonl").open(
                "a"
            ) as lines:
                lines.write('{"payloadType": "forged"}\n')

            release = s.store.get_release(release_id)
            evidence = s.app.evidence(Caller("t"), str(release.id))
            integrity = evidence["integrity"]
            assert integrity["bytes_ok"] is False
            assert f"artifact {digest} is corrupt" in integrity["bytes_problem"]
            # The signature covers the provenance statement, which still names the digest.
            assert integrity["signature_ok"] is True
            assert evidence["attestations"]["rejected"] == 1
            assert [r["run"] for r in evidence["attestations"]["runs"]] == ["run-1"]

            s.artifacts.envelope_path(digest).unlink()
            unsigned = s.app.evidence(Caller("t"), str(release.id))
            assert unsigned["integrity"]["signature_ok"] is False
            assert "is unsigned" in unsigned["integrity"]["signature_problem"]
            assert unsigned["provenance"] is None

    run(scenario())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("42", ReleaseRef(release_id=42)),
        ("catalog/staging", ReleaseRef(service="catalog", env="staging")),
        ("catalog/staging@2", ReleaseRef(service="catalog", env="staging", revision=2)),
        ("catalog/staging@r2", ReleaseRef(service="catalog", env="staging", revision=2)),
        ("catalog/staging r2", ReleaseRef(service="catalog", env="staging", revision=2)),
        ("nope", None),
        ("catalog/staging@", None),
        ("catalog/staging rx", None),
        ("a/b/c", None),
    ],
)
def test_parse_release_reference(text: str, expected: ReleaseRef | None) -> None:
    assert parse_release_reference(text) == expected


def test_find_release_resolves_every_form(tmp_path: Path, database_url: str) -> None:
    project = load_project(write_project(tmp_path))
    digest = f"sha256:{'ab' * 32}"
    with Store.open(database_url) as store:
        store.record_artifact(
            ArtifactRecord(digest, "catalog", None, None, None, time.time(), 1, 1, "true", ()),
            actor="test",
        )
        new = new_release(digest, phase=Phase.FAILED)
        made = [store.create_release(new, actor="test") for _ in range(2)]
        first, second = made
        assert find_release(store, str(first.id)) == first
        assert find_release(store, "catalog/staging") == second
        assert find_release(store, "catalog/staging@1") == first
        assert find_release(store, "catalog/staging@r1") == first
        assert find_release(store, first.name) == first
        for missing in ("catalog/production", "catalog/staging@r9", "999", "nope"):
            with pytest.raises(NotFound) as refused:
                find_release(store, missing)
            assert refused.value.hint is not None and "SERVICE/ENV@r3" in refused.value.hint

        # No archive, no signature: still a report, with both failures named.
        artifacts = ArtifactStore(tmp_path)
        evidence = release_evidence(project, store, artifacts, Keyring.of(artifacts), first)
        assert evidence["integrity"]["bytes_ok"] is False
        assert "not in the artifact store" in evidence["integrity"]["bytes_problem"]
        assert evidence["integrity"]["signature_ok"] is False
        assert evidence["requirements"]["unmet"] == []  # staging declares nothing here
        assert [e["kind"] for e in evidence["events"]] == ["release.created"]
