"""API answers shaped as docs/api.md describes them, for the stub server.

Only what the CLI reads is filled in with care; the shapes follow the contract so a field
the CLI starts to rely on shows up here first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.cli.stub_api import StubApi

DIGEST = "sha256:" + "ab" * 32
CONFIG = """\
project: stubbed
services:
  catalog:
    build: {run: "true", outputs: [app]}
    run: "python3 app.py"
environments:
  staging: {}
"""
AT = 1_700_000_000.0


def project(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "conveyor.yaml").write_text(CONFIG)
    return root


def status_row(service: str, env: str = "staging", **extra: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "service": service,
        "env": env,
        "revision": 3,
        "version": "0123456789ab",
        "artifact": DIGEST,
        "config_version": "c-5f3a",
        "ready": 2,
        "desired": 2,
        "phase": "succeeded",
        "rollout_revision": 3,
        "message": "2/2 ready",
        "address": "http://127.0.0.1:18080",
        "preview_address": None,
        "weights": {"r3": 100},
        "instances": [],
        "step": None,
        "canary_percent": None,
        "analysis": {},
        "paused": False,
    }
    row.update(extra)
    return row


def release(revision: int = 4, actor: str = "ana@laptop", **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": 10 + revision,
        "name": f"catalog/staging r{revision}",
        "service": "catalog",
        "env": "staging",
        "revision": revision,
        "artifact_digest": DIGEST,
        "template": "t1",
        "config": {},
        "config_version": "c-5f3a",
        "instances": 2,
        "phase": "progressing",
        "done": False,
        "status": {"message": "starting 2 instance(s)"},
        "plan": {},
        "stable_release_id": None,
        "rollback_of": None,
        "reason": "deploy",
        "actor": actor,
        "created_at": AT,
        "updated_at": AT,
    }
    data.update(extra)
    return data


def event(seq: int, kind: str, actor: str = "ana@laptop", **details: Any) -> dict[str, Any]:
    return {
        "seq": seq,
        "at": AT + seq,
        "actor": actor,
        "kind": kind,
        "service": "catalog",
        "env": "staging",
        "release_id": 14,
        "details": details,
        "prev_hash": "0" * 64,
        "hash": f"{seq:064x}",
    }


def artifact(digest: str = DIGEST) -> dict[str, Any]:
    return {
        "digest": digest,
        "short": digest.removeprefix("sha256:")[:12],
        "services": ["catalog"],
        "commit": "0123456789abcdef0123456789abcdef01234567",
        "branch": "main",
        "dirty": False,
        "created_at": AT,
        "size": 1234,
        "files": 3,
        "build_command": "true",
        "outputs": ["app"],
        "metadata": {},
    }


def serve_everything(stub: StubApi, *, actor: str = "ana@laptop", services: int = 3) -> None:
    """Every endpoint a server-talking command calls, answered."""
    rows = [status_row(f"svc{i:02d}") for i in range(services)]
    done = release(phase="succeeded", done=True, actor=actor)
    stub.on("GET", "/api/v1/health", (200, {"ok": True, "pid": 1, "project": "stubbed"}))
    stub.on("GET", "/api/v1/status", (200, {"services": rows, "config": {"ok": True}}))
    stub.on("GET", "/api/v1/history", (200, {"releases": [done, release(3, actor=actor)]}))
    stub.on(
        "GET",
        "/api/v1/events",
        (200, {"events": [event(1, "release.created", actor, artifact=DIGEST, reason="deploy")]}),
    )
    stub.on("GET", "/api/v1/releases/14", (200, done))
    stub.on("POST", "/api/v1/releases", (201, release(actor=actor)))
    stub.on("POST", "/api/v1/rollback", (201, release(5, reason="rollback to r1", actor=actor)))
    stub.on("POST", "/api/v1/control", (200, release(actor=actor)))
    stub.on("GET", "/api/v1/artifacts", (200, {"artifacts": [artifact()]}))
    stub.on("GET", f"/api/v1/artifacts/{DIGEST}", (200, artifact()))
    stub.on(
        "GET",
        "/api/v1/keys",
        (200, {"algorithm": "ed25519", "key": "k1", "public_key": "PEM", "trusted": ["k1"]}),
    )
    token = {
        "id": "tok_1",
        "identity": "ana@laptop",
        "role": "admin",
        "environments": ["*"],
        "created_at": AT,
        "created_by": "system",
        "expires_at": None,
        "revoked_at": None,
        "last_used_at": AT,
    }
    stub.on("GET", "/api/v1/tokens", (200, {"tokens": [token]}))
    stub.on("GET", "/api/v1/whoami", (200, {**token, "token": "tok_1"}))
    stub.on(
        "GET",
        "/api/v1/logs",
        (200, {"service": "catalog", "env": "staging", "instances": {"i-1": ["hello"]}}),
    )
