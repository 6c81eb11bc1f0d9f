"""The signing key out of the project tree, and trust pinned rather than found in a folder.

A project as the previous version left it — its key in ``.conveyor/keys``, readable by every
job — is started by this version: the key moves out (a new one is made outside the tree),
the old one is retired, artifacts recorded before still deploy, and anything signed with
the old key afterwards is refused. A ``*.pub`` dropped beside the key trusts nothing.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from conveyor.application import Caller
from conveyor.artifacts.build import build_archive
from conveyor.artifacts.signing import Keyring, public_pem, sign_build
from conveyor.artifacts.store import ArtifactStore
from conveyor.config.loader import load_project
from conveyor.errors import Refused
from conveyor.layout import Layout
from conveyor.server.stack import build_stack
from conveyor.store.records import ArtifactRecord
from conveyor.store.repository import Store

from ..controller.harness import push_build, run, write_project

pytestmark = pytest.mark.integration


def _record(root: Path, store: Store, keyring: Keyring, version: str) -> str:
    """Build catalog at ``version`` and record it signed by ``keyring`` (as 0.1 did)."""
    (root / "services" / "catalog" / "VERSION").write_text(version + "\n")
    spec = load_project(root / "conveyor.yaml").config.service("catalog")
    artifacts = ArtifactStore(root)
    with build_archive(Layout(root), "catalog", spec) as built:
        artifacts.put(built.path)
        signed = sign_build(artifacts, built.facts, keyring)
        facts = built.facts
        store.record_artifact(
            ArtifactRecord(
                built.digest,
                "catalog",
                None,
                None,
                None,
                time.time(),
                facts.size,
                facts.files,
                facts.command,
                facts.outputs,
                {"provenance": signed},
            ),
            actor="old-version",
            provenance=signed,
        )
        return built.digest


def test_the_key_moves_out_of_the_tree_and_the_old_one_vouches_only_for_the_past(
    tmp_path: Path, database_url: str
) -> None:
    async def scenario() -> None:
        write_project(tmp_path, instances=1)
        layout = Layout(tmp_path).ensure()
        legacy = Keyring(layout.legacy_keys)  # 0.1: the key in the tree, trust by file
        with Store.open(database_url) as store:
            old_digest = _record(tmp_path, store, legacy, "v1")
        old_key = legacy.current().fingerprint
        kept = tmp_path / "a-job-kept-a-copy"
        kept.mkdir()
        shutil.copy(legacy.private_path, kept / "signing.key")
        await asyncio.sleep(0.01)

        parts = build_stack(tmp_path / "conveyor.yaml", database_url=database_url)
        await parts.start()
        try:
            assert not layout.legacy_keys.exists()
            keys = parts.keyring.directory
            assert tmp_path.resolve() not in keys.resolve().parents
            assert keys.stat().st_mode & 0o777 == 0o700
            assert parts.keyring.private_path.stat().st_mode & 0o777 == 0o600
            new_key = parts.keyring.current().fingerprint
            assert new_key != old_key
            moved = [e for e in parts.store.events() if e.kind == "keys.moved"]
            assert moved and moved[0].details["retired"] == [old_key]
            pinned = {k.fingerprint: k for k in parts.keyring.pinned()}
            assert pinned[old_key].retired_at is not None and pinned[new_key].retired_at is None

            app = parts.app
            release = await app.deploy(Caller("alice"), "catalog", "staging", old_digest)
            assert release.artifact_digest == old_digest  # recorded before: still vouched for

            forged = _record(tmp_path, parts.store, Keyring(kept), "v2")
            with pytest.raises(Refused, match="no valid signature by a trusted key"):
                await app.deploy(Caller("alice"), "catalog", "dev", forged)

            # Trust is pinned: a key dropped beside the server's own is not trusted.
            intruder = Ed25519PrivateKey.generate()
            (keys / "intruder.pub").write_text(public_pem(intruder.public_key()))
            forged_again = _record(tmp_path, parts.store, Keyring(kept), "v3")
            with pytest.raises(Refused):
                await app.deploy(Caller("alice"), "catalog", "dev", forged_again)
        finally:
            await parts.close(stop_instances=True)

    run(scenario())


def test_a_client_cannot_date_an_attestation(tmp_path: Path, database_url: str) -> None:
    """The server stamps attestations with its own clock: a claim dated next year does not
    outrank a later failure."""

    async def scenario() -> None:
        write_project(tmp_path, instances=1, requires={"production": "{gates: [scan]}"})
        parts = build_stack(tmp_path / "conveyor.yaml", database_url=database_url)
        await parts.start()
        try:
            project = load_project(tmp_path / "conveyor.yaml")
            digest = await push_build(parts.app, tmp_path, project, "catalog")
            future = time.time() + 365 * 86400
            passed = {
                "run": "r1",
                "pipeline": "ci",
                "branch": "main",
                "commit": None,
                "recorded": future,
                "jobs": [{"name": "scan", "result": "success"}],
            }
            parts.app.attest(Caller("ci"), "catalog", digest, passed)
            failed = {**passed, "run": "r2", "jobs": [{"name": "scan", "result": "failure"}]}
            parts.app.attest(Caller("ci"), "catalog", digest, failed)
            with pytest.raises(Refused, match="gate 'scan' did not pass"):
                await parts.app.deploy(Caller("alice"), "catalog", "production", digest)
        finally:
            await parts.close(stop_instances=True)

    run(scenario())
