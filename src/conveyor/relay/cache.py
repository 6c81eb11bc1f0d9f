"""The relay's copy of each environment's flag set: in memory, compiled, and on disk.

A set is accepted only when it parses as a document for the environment it was asked
for; the file is written atomically (temporary file, fsync, rename) with mode 0600, so a
relay killed mid-write restarts from the previous complete set, and other users of the
host cannot read what flags target. Only the published document is written: it holds
flag rules, never the relay's token or SDK keys.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conveyor.core.flags.evaluate import Compiled, compile_document

MAX_DOCUMENT = 8 * 1024 * 1024


@dataclass(frozen=True)
class Snapshot:
    env: str
    body: bytes
    etag: str
    revision: int
    flags: dict[str, Compiled]
    received_at: float
    source: str  # "upstream" or "disk"


def parse(env: str, body: bytes, etag: str | None, source: str) -> Snapshot:
    """A document as a snapshot; ``ValueError`` if it is not one for ``env``."""
    if len(body) > MAX_DOCUMENT:
        raise ValueError(f"the flag set is over {MAX_DOCUMENT} bytes")
    doc: Any = json.loads(body)
    if not isinstance(doc, dict) or doc.get("env") != env:
        raise ValueError(f"not a flag set for {env!r}")
    _, flags = compile_document(doc)
    tag = etag or '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    revision = doc.get("revision")
    return Snapshot(
        env,
        body,
        tag,
        revision if isinstance(revision, int) else 0,
        flags,
        time.time(),
        source,
    )


class FlagCache:
    """Snapshots by environment; ``put`` persists, ``load`` restores after a restart."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._snapshots: dict[str, Snapshot] = {}
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    def get(self, env: str) -> Snapshot | None:
        return self._snapshots.get(env)

    def put(self, snapshot: Snapshot) -> bool:
        """Keep ``snapshot``; False when it is the set already held (same ETag)."""
        with self._lock:
            held = self._snapshots.get(snapshot.env)
            if held is not None and held.etag == snapshot.etag:
                self._snapshots[snapshot.env] = snapshot  # fresher receipt time
                return False
            self._snapshots[snapshot.env] = snapshot
        if self.directory is not None:
            self._write(snapshot)
        return True

    def load(self, env: str) -> Snapshot | None:
        if self.directory is None:
            return None
        path = self._path(env)
        try:
            raw = json.loads(path.read_bytes())
            snapshot = parse(env, raw["body"].encode(), raw["etag"], "disk")
        except (OSError, ValueError, KeyError, TypeError):
            return None
        with self._lock:
            self._snapshots.setdefault(env, snapshot)
        return snapshot

    def _path(self, env: str) -> Path:
        assert self.directory is not None
        return self.directory / f"flags-{env}.json"

    def _write(self, snapshot: Snapshot) -> None:
        path = self._path(snapshot.env)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        data = json.dumps({"etag": snapshot.etag, "body": snapshot.body.decode()}).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        tmp.chmod(0o600)
        tmp.replace(path)
