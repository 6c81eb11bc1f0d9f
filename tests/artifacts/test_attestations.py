"""Pipeline-run attestations: real keys, real ed25519, real files beside the artifact.

Gate results count for promotion only when a trusted key signed them about this very digest;
everything else in the attestation file is counted as rejected and ignored.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from conveyor.artifacts import ArtifactStore
from conveyor.artifacts.attestations import (
    RUN_PREDICATE,
    JobVerdict,
    RunFacts,
    attest_run,
    attestations_path,
    gate_results,
    run_statement,
    verified_runs,
)
from conveyor.artifacts.provenance import encode
from conveyor.artifacts.signing import Keyring, sign_envelope

DIGEST = "sha256:" + "ab" * 32
OTHER = "sha256:" + "cd" * 32


def facts(recorded: float, **jobs: str) -> RunFacts:
    return RunFacts(
        run=f"run-{recorded:g}",
        pipeline="/p/conveyor.yaml",
        branch="main",
        tag=None,
        commit="0" * 40,
        recorded=recorded,
        jobs=tuple(JobVerdict(name.replace("__", "-"), result) for name, result in jobs.items()),
    )


@pytest.fixture
def artifacts(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path)


def test_the_statement_names_the_digest_the_run_and_every_job(tmp_path: Path) -> None:
    stmt = run_statement(DIGEST, "catalog", facts(1_700_000_000.5, test="success", lint="failure"))
    assert stmt["predicateType"] == RUN_PREDICATE
    assert stmt["subject"] == [{"name": "catalog.tar.gz", "digest": {"sha256": "ab" * 32}}]
    run = stmt["predicate"]["run"]
    assert (run["id"], run["branch"], run["commit"]) == ("run-1.7e+09", "main", "0" * 40)
    assert run["recordedOn"] == "2023-11-14T22:13:20.500Z"
    assert stmt["predicate"]["jobs"] == [
        {"name": "test", "result": "success"},
        {"name": "lint", "result": "failure"},
    ]


def test_signed_runs_verify_and_give_gate_results(artifacts: ArtifactStore) -> None:
    assert verified_runs(artifacts, DIGEST).statements == ()
    signed = attest_run(artifacts, DIGEST, "catalog", facts(1.0, test="success", scan="success"))
    assert signed["key"] == Keyring.of(artifacts).current().fingerprint
    attested = verified_runs(artifacts, DIGEST)
    assert attested.rejected == 0
    assert attested.gates() == {"test": "success", "scan": "success"}
    # Another digest's file is another file: nothing leaks across artifacts.
    assert verified_runs(artifacts, OTHER).statements == ()


def test_the_newest_run_has_the_last_word_on_each_job(artifacts: ArtifactStore) -> None:
    attest_run(artifacts, DIGEST, "catalog", facts(2.0, test="failure", lint="success"))
    attest_run(artifacts, DIGEST, "catalog", facts(3.0, test="success"))
    # Written out of order (clocks differ between machines): time decides, not file order.
    attest_run(artifacts, DIGEST, "catalog", facts(1.0, test="failure", scan="skipped"))
    assert verified_runs(artifacts, DIGEST).gates() == {
        "test": "success",
        "lint": "success",
        "scan": "skipped",
    }


def test_a_matrix_job_passes_only_when_every_variant_passed() -> None:
    def stmt(recorded: float, **variants: str) -> dict[str, Any]:
        verdicts = tuple(JobVerdict(f"test[python={v}]", r) for v, r in variants.items())
        return run_statement(DIGEST, "c", RunFacts("r", "p", None, None, None, recorded, verdicts))

    assert gate_results([stmt(1, a="success", b="success")]) == {"test": "success"}
    assert gate_results([stmt(1, a="success", b="failure")]) == {"test": "failure"}
    assert gate_results([stmt(1, a="success", b="failure"), stmt(2, a="success")]) == {
        "test": "success"
    }


def _lines(artifacts: ArtifactStore) -> list[str]:
    return attestations_path(artifacts, DIGEST).read_text().splitlines()


def test_a_tampered_line_is_rejected_and_its_gates_do_not_count(artifacts: ArtifactStore) -> None:
    attest_run(artifacts, DIGEST, "catalog", facts(1.0, test="failure"))
    path = attestations_path(artifacts, DIGEST)
    envelope = json.loads(_lines(artifacts)[0])
    payload = base64.b64decode(envelope["payload"]).replace(b'"failure"', b'"success"')
    envelope["payload"] = base64.b64encode(payload).decode()
    path.write_text(json.dumps(envelope) + "\n")
    attested = verified_runs(artifacts, DIGEST)
    assert (attested.statements, attested.rejected) == ((), 1)
    assert attested.gates() == {}


def test_a_statement_by_an_untrusted_key_or_about_another_digest_is_rejected(
    artifacts: ArtifactStore,
) -> None:
    attest_run(artifacts, DIGEST, "catalog", facts(1.0, lint="success"))
    path = attestations_path(artifacts, DIGEST)
    stranger = Ed25519PrivateKey.generate()
    forged = sign_envelope(
        encode(run_statement(DIGEST, "catalog", facts(2.0, test="success"))), stranger
    )
    misplaced = sign_envelope(
        encode(run_statement(OTHER, "catalog", facts(3.0, test="success"))),
        Keyring.of(artifacts).signing_key(),
    )
    with path.open("a") as out:
        out.write(json.dumps(forged) + "\n" + json.dumps(misplaced) + "\n" + "not json\n")
    attested = verified_runs(artifacts, DIGEST)
    assert attested.rejected == 3
    assert attested.gates() == {"lint": "success"}


def test_a_rotated_key_still_verifies_what_it_signed(artifacts: ArtifactStore) -> None:
    attest_run(artifacts, DIGEST, "catalog", facts(1.0, test="success"))
    Keyring.of(artifacts).rotate()
    attest_run(artifacts, DIGEST, "catalog", facts(2.0, lint="success"))
    attested = verified_runs(artifacts, DIGEST)
    assert attested.rejected == 0
    assert attested.gates() == {"test": "success", "lint": "success"}
