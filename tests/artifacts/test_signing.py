"""Signed provenance for real: keys on disk, real ed25519, builds, and the real deploy path.

The deploy scenarios go through ``tests.controller.harness.stack`` (real store, controller
and artifact store): a refusal must stop the release before it exists and leave an
``artifact.refused`` event on the ledger.
"""

from __future__ import annotations

import base64
import json
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from conveyor.application import Caller
from conveyor.artifacts import ArtifactStore, build_archive
from conveyor.artifacts.signing import (
    PAYLOAD_TYPE,
    Keyring,
    fingerprint,
    pae,
    sign_build,
    sign_envelope,
    verify_signed,
)
from conveyor.errors import Refused
from conveyor.layout import Layout
from conveyor.store import ArtifactRecord, Store
from tests.controller.harness import run, stack

from .gitrepo import commit_all, git, init_repo
from .specs import Build, Service


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = init_repo(tmp_path / "project")
    (root / "svc").mkdir()
    (root / "svc" / "app.py").write_text("print('v1')\n")
    (root / ".gitignore").write_text("dist/\n")
    commit_all(root)
    return root


@pytest.fixture
def store(project: Path) -> Iterator[Store]:
    (project / ".conveyor").mkdir()
    with Store.open(f"sqlite:///{project / '.conveyor' / 'state.db'}") as opened:
        yield opened


def build_and_sign(project: Path, store: Store, artifacts: ArtifactStore) -> ArtifactRecord:
    """What `conveyor build` and the server do together: build, keep the bytes, sign, record."""
    with build_archive(Layout(project), "svc", Service()) as built:
        digest = artifacts.put(built.path)
        signed = sign_build(artifacts, built.facts)
        return store.record_artifact(
            ArtifactRecord(
                digest,
                "svc",
                built.facts.source.commit,
                built.facts.source.branch,
                built.facts.source.dirty,
                0.0,
                built.facts.size,
                built.facts.files,
                built.facts.command,
                built.facts.outputs,
                {"provenance": signed},
            ),
            actor="t",
            provenance=signed,
        )


def envelopes(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def payload(envelope: dict[str, Any]) -> dict[str, Any]:
    return json.loads(base64.b64decode(envelope["payload"]))  # type: ignore[no-any-return]


def writable(path: Path) -> Path:
    path.chmod(0o644)
    return path


# --- keys and envelopes ---------------------------------------------------------------------


def test_dsse_pae_matches_the_spec_example() -> None:
    assert pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_key_is_created_once_private_and_pem(tmp_path: Path) -> None:
    keyring = Keyring(tmp_path / "keys")
    assert keyring.trusted() == {}
    first = keyring.current()
    assert Keyring(tmp_path / "keys").current() == first  # stable across instances
    assert stat.S_IMODE(keyring.private_path.stat().st_mode) == 0o600
    assert keyring.private_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert first.path.read_text() == first.public_pem
    assert first.public_pem.startswith("-----BEGIN PUBLIC KEY-----")
    assert first.fingerprint.startswith("sha256:") and len(first.fingerprint) == 7 + 64
    assert list(keyring.trusted()) == [first.fingerprint]


def test_rotation_keeps_old_public_keys_trusted_and_retires_the_private_one(
    tmp_path: Path,
) -> None:
    keyring = Keyring(tmp_path / "keys")
    old = keyring.current()
    new, previous = keyring.rotate()
    assert previous == old and new != old
    assert keyring.current() == new
    assert set(keyring.trusted()) == {old.fingerprint, new.fingerprint}
    assert len(list(keyring.directory.glob("*.key"))) == 1  # the old one can sign nothing


def test_envelope_verifies_only_with_the_trusted_key(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    envelope = sign_envelope(b'{"x":1}', key)
    assert envelope["payloadType"] == PAYLOAD_TYPE == "application/vnd.in-toto+json"
    assert envelope["signatures"][0]["keyid"] == fingerprint(key.public_key())
    signature = base64.b64decode(envelope["signatures"][0]["sig"])
    key.public_key().verify(signature, pae(PAYLOAD_TYPE, b'{"x":1}'))  # raises if wrong


# --- build signs --------------------------------------------------------------------------


def test_build_signs_a_verifiable_statement_about_its_artifact(project: Path, store: Store) -> None:
    artifacts = ArtifactStore(project)
    head = git(project, "rev-parse", "HEAD")
    artifact = build_and_sign(project, store, artifacts)
    digest = artifact.digest
    path = artifacts.envelope_path(digest)
    assert path == project / ".conveyor/artifacts/sha256" / f"{digest[7:]}.intoto.jsonl"
    key = Keyring.of(artifacts).current().fingerprint
    assert artifact.metadata["provenance"] == {"envelope": str(path), "key": key}

    verified = verify_signed(artifacts, digest)
    assert verified.key == key
    [envelope] = envelopes(path)
    stmt = payload(envelope)
    assert stmt == verified.statement
    assert stmt["subject"] == [{"name": "svc.tar.gz", "digest": {"sha256": digest[7:]}}]
    build = stmt["predicate"]["buildDefinition"]
    assert build["externalParameters"]["command"] == Build().run
    assert build["externalParameters"]["service"] == "svc"
    [material] = build["resolvedDependencies"]
    assert material["digest"] == {"sha1": head, "gitCommit": head}
    assert material["annotations"] == {"dirty": False, "branch": "main"}
    run_details = stmt["predicate"]["runDetails"]
    assert run_details["builder"]["id"] == "conveyor"
    assert run_details["byproducts"][0]["annotations"] == {
        "files": artifact.files,
        "size": artifact.size,
    }
    assert run_details["metadata"]["startedOn"] <= run_details["metadata"]["finishedOn"]

    # A rebuild of the same bytes keeps the first envelope, even under a rotated key.
    before = path.read_bytes()
    Keyring.of(artifacts).rotate()
    again = build_and_sign(project, store, artifacts)
    assert again.digest == digest
    assert path.read_bytes() == before
    assert verify_signed(artifacts, digest).key == key


def test_a_dirty_tree_is_recorded_in_the_signed_materials(project: Path, store: Store) -> None:
    (project / "svc" / "app.py").write_text("print('v2')\n")
    artifacts = ArtifactStore(project)
    digest = build_and_sign(project, store, artifacts).digest
    stmt = verify_signed(artifacts, digest).statement
    [material] = stmt["predicate"]["buildDefinition"]["resolvedDependencies"]
    assert material["annotations"]["dirty"] is True


# --- deploy verifies ------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["tampered", "unsigned", "untrusted", "other-subject"])
def test_deploy_refuses_an_artifact_without_valid_provenance(
    tmp_path: Path, database_url: str, case: str
) -> None:
    async def scenario() -> None:
        async with stack(tmp_path, database_url) as s:
            digest = await s.build("v1")
            envelope = s.artifacts.envelope_path(digest)
            if case == "tampered":
                archive = writable(s.artifacts.path(digest))
                data = bytearray(archive.read_bytes())
                data[len(data) // 2] ^= 0x01
                archive.write_bytes(bytes(data))
                expected = "is corrupt"
            elif case == "unsigned":
                envelope.unlink()
                expected = "is unsigned"
            elif case == "untrusted":
                [original] = envelopes(envelope)
                forged = sign_envelope(
                    base64.b64decode(original["payload"]), Ed25519PrivateKey.generate()
                )
                writable(envelope).write_text(json.dumps(forged) + "\n")
                expected = "no valid signature by a trusted key"
            else:  # a genuine envelope, for another artifact
                other = await s.build("v2")
                writable(envelope).write_bytes(s.artifacts.envelope_path(other).read_bytes())
                expected = "describes another artifact"
            with pytest.raises(Refused) as caught:
                await s.deploy("staging", digest)
            message = caught.value.message
            assert expected in message and digest in message
            assert caught.value.hint is not None and "rebuild" in caught.value.hint
            assert s.store.releases("catalog", "staging", limit=5) == []
            refused = [
                e
                for e in s.store.events(service="catalog", env="staging")
                if e.kind == "artifact.refused"
            ]
            assert len(refused) == 1
            assert refused[0].actor == "test"
            assert refused[0].details["artifact"] == digest
            assert expected in refused[0].details["reason"]

    run(scenario())


def test_after_rotation_old_artifacts_deploy_and_the_old_key_vouches_for_nothing_new(
    tmp_path: Path, database_url: str
) -> None:
    async def scenario() -> None:
        async with stack(tmp_path, database_url) as s:
            keyring = s.parts.keyring
            old_digest = await s.build("v1")
            old_key = keyring.current().fingerprint
            kept = tmp_path / "kept-old-key"  # someone kept a copy of the old private key
            kept.mkdir()
            (kept / "signing.key").write_bytes(keyring.private_path.read_bytes())
            new_key, previous = s.app.rotate_keys(Caller("admin"))
            assert previous is not None and previous.fingerprint == old_key
            new_digest = await s.build("v2")
            assert s.store.get_artifact(new_digest).metadata["provenance"]["key"] == (
                new_key.fingerprint
            )
            old = await s.wait(await s.deploy("staging", old_digest))
            assert old.phase == "succeeded", old.status
            new = await s.deploy("dev", new_digest)
            assert new.artifact_digest == new_digest
            kinds = [e.kind for e in s.store.events()]
            assert "artifact.refused" not in kinds
            assert "key.retired" in kinds

            # Bytes signed with the retired key after its retirement are refused.
            (tmp_path / "services" / "catalog" / "VERSION").write_text("forged\n")
            spec = s.project.config.service("catalog")
            with build_archive(Layout(tmp_path), "catalog", spec) as built:
                s.artifacts.put(built.path)
                signed = sign_build(s.artifacts, built.facts, Keyring(kept))
                s.store.record_artifact(
                    ArtifactRecord(
                        built.digest,
                        "catalog",
                        None,
                        None,
                        None,
                        time.time(),
                        built.facts.size,
                        built.facts.files,
                        built.facts.command,
                        built.facts.outputs,
                    ),
                    actor="mallory",
                    provenance=signed,
                )
                forged = built.digest
            with pytest.raises(Refused, match="no valid signature by a trusted key"):
                await s.deploy("production", forged)

    run(scenario())
