"""Small builders shared by the store tests."""

from __future__ import annotations

import hashlib
import socket
from typing import Any

from conveyor.store import ArtifactRecord, NewRelease


class FakeClock:
    """A clock that advances a quarter second per reading, so ordering by time is testable."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        self.now += 0.25
        return self.now


def digest_of(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def artifact(
    seed: str = "a", *, service: str = "catalog", created_at: float = 1.0
) -> ArtifactRecord:
    return ArtifactRecord(
        digest=digest_of(seed),
        service=service,
        commit="0123abcd" * 5,
        branch="main",
        dirty=False,
        created_at=created_at,
        size=1234,
        files=3,
        build_command="python -m compileall app",
        outputs=("app/",),
        metadata={"build_duration": 1.5, "tools": {"python": "3.11"}},
    )


def new_release(digest: str, **overrides: Any) -> NewRelease:
    fields: dict[str, Any] = {
        "service": "catalog",
        "env": "staging",
        "artifact_digest": digest,
        "template": "tmpl-1",
        "config": {"LOG_LEVEL": "info"},
        "config_version": "cfg-1",
        "instances": 2,
        "strategy": {"rolling": {"max_surge": 1}},
        "spec": {"steps": [{"set_weight": 100}]},
        "status": {"step": 0},
        "phase": "pending",
        "stable_release_id": None,
    }
    fields.update(overrides)
    return NewRelease(**fields)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
