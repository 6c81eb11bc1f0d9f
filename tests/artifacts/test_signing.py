"""Signed provenance for real: keys on disk, real ed25519, builds, and the real deploy path.

The deploy scenarios go through ``tests.controller.harness.stack`` (real store, controller
and artifact store): a refusal must stop the release before it exists and leave an
``artifact.refused`` event on the ledger.
"""

from __future__ import annotations

import base64
import json
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from conveyor.artifacts import ArtifactStore, build_service
from conveyor.artifacts.signing import (
    PAYLOAD_TYPE,
    Keyring,
    fingerprint,
    pae,
    sign_envelope,
    verify_signed,
)
from conveyor.errors import Refused
from conveyor.store import Store
from tests.cli.support import conveyor
from tests.controller.harness import run, stack, write_project

from .gitrepo import commit_all, git, init_repo


@dataclass(frozen=True)
class Build:
    run: str = "mkdir -p dist && cp app.py dist/"
    outputs: list[str] = field(default_factory=lambda: ["dist/"])
    timeout: float = 60.0


@dataclass(frozen=True)
class Service:
    path: str = "svc"
    build: Build = field(default_factory=Build)


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
    result = build_service(project, "svc", Service(), store, artifacts, actor="t")
    digest = result.artifact.digest
    path = artifacts.envelope_path(digest)
    assert path == project / ".conveyor/artifacts/sha256" / f"{digest[7:]}.intoto.jsonl"
    key = Keyring.of(artifacts).current().fingerprint
    assert result.artifact.metadata["provenance"] == {"envelope": str(path), "key": key}

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
        "files": result.artifact.files,
        "size": result.artifact.size,
    }
    assert run_details["metadata"]["startedOn"] <= run_details["metadata"]["finishedOn"]

    # A rebuild of the same bytes keeps the first envelope, even under a rotated key.
    before = path.read_bytes()
    Keyring.of(artifacts).rotate()
    again = build_service(project, "svc", Service(), store, artifacts, actor="t")
    assert again.artifact.digest == digest and again.reused
    assert path.read_bytes() == before
    assert verify_signed(artifacts, digest).key == key


def test_a_dirty_tree_is_recorded_in_the_signed_materials(project: Path, store: Store) -> None:
    (project / "svc" / "app.py").write_text("print('v2')\n")
    artifacts = ArtifactStore(project)
    digest = build_service(project, "svc", Service(), store, artifacts, actor="t").artifact.digest
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
            digest = s.build("v1")
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
                other = s.build("v2")
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


def test_after_rotation_old_artifacts_deploy_and_new_ones_use_the_new_key(
    tmp_path: Path, database_url: str
) -> None:
    async def scenario() -> None:
        async with stack(tmp_path, database_url) as s:
            keyring = Keyring.of(s.artifacts)
            old_digest = s.build("v1")
            old_key = keyring.current().fingerprint
            new_key, previous = keyring.rotate()
            assert previous is not None and previous.fingerprint == old_key
            new_digest = s.build("v2")
            assert verify_signed(s.artifacts, old_digest).key == old_key
            assert verify_signed(s.artifacts, new_digest).key == new_key.fingerprint
            assert s.store.get_artifact(new_digest).metadata["provenance"]["key"] == (
                new_key.fingerprint
            )
            old = await s.wait(await s.deploy("staging", old_digest))
            assert old.phase == "succeeded", old.status
            new = await s.deploy("dev", new_digest)
            assert new.artifact_digest == new_digest
            kinds = [e.kind for e in s.store.events(service="catalog")]
            assert "artifact.refused" not in kinds

            # Distrusting the old key (deleting its .pub) makes its artifacts undeployable.
            previous.path.unlink()
            with pytest.raises(Refused, match="no valid signature by a trusted key"):
                await s.deploy("production", old_digest)

    run(scenario())


# --- the CLI ------------------------------------------------------------------------------


def test_keys_show_and_rotate_on_the_command_line(tmp_path: Path) -> None:
    write_project(tmp_path, project="cli-keys")
    shown = conveyor("keys", "show", "--json", root=tmp_path)
    assert shown.code == 0, shown
    first = shown.json()
    keyring = Keyring(tmp_path / ".conveyor" / "keys")
    assert first["algorithm"] == "ed25519"
    assert first["key"] == keyring.current().fingerprint
    assert first["public_key"] == keyring.current().public_pem
    assert first["trusted"] == [first["key"]]
    assert conveyor("keys", "show", "--json", root=tmp_path).json() == first  # not a new key

    rotated = conveyor("keys", "rotate", "--json", root=tmp_path)
    assert rotated.code == 0, rotated
    second = rotated.json()
    assert second["previous"] == first["key"] and second["key"] != first["key"]
    assert second["trusted"] == sorted([first["key"], second["key"]])

    human = conveyor("keys", "show", root=tmp_path)
    assert human.code == 0, human
    assert second["key"] in human.stdout and "BEGIN PUBLIC KEY" in human.stdout
    assert "2 key(s)" in human.stdout
