"""A job cache: tarballs of paths, found by exact key or by the newest key with a prefix.

Semantics follow GitHub's actions/cache because users already know them: an exact key hit
restores and the job does not save again (entries are immutable); otherwise the newest entry
whose key starts with one of ``restore_keys`` is restored (a partial hit), and after the job
*succeeds* the paths are saved under the exact key. A failed job never saves, so a broken
dependency install cannot poison later runs.

Entries are ``<sha256(key)>.tar.gz`` with a ``.json`` beside it naming the key and when it
was saved; writes go to a temporary file renamed into place, so a crash leaves no half entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from conveyor.layout import private_file


def hash_files(workdir: Path, patterns: Sequence[str]) -> str:
    """One digest over every file matching the globs (path and content); '' when none match."""
    digest = hashlib.sha256()
    found = False
    for path in sorted({p for pattern in patterns for p in workdir.glob(pattern) if p.is_file()}):
        found = True
        digest.update(str(path.relative_to(workdir)).encode() + b"\0")
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest() if found else ""


@dataclass(frozen=True)
class CacheOutcome:
    """``hit`` is exact; ``restored_key`` is set for exact and prefix restores alike."""

    key: str
    hit: bool
    restored_key: str | None
    saved: bool = False


class CacheStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _entry(self, key: str) -> Path:
        return self.root / hashlib.sha256(key.encode()).hexdigest()

    def _find(self, key: str, restore_keys: Sequence[str]) -> tuple[str, bool] | None:
        if self._entry(key).with_suffix(".tar.gz").exists():
            return key, True
        if not restore_keys or not self.root.is_dir():
            return None
        entries: list[tuple[float, str]] = []
        for meta in self.root.glob("*.json"):
            try:
                record = json.loads(meta.read_text())
                entries.append((float(record["saved_at"]), str(record["key"])))
            except (OSError, ValueError, KeyError):
                continue  # a half-removed entry is simply not a candidate
        for prefix in restore_keys:
            candidates = [e for e in entries if e[1].startswith(prefix)]
            if candidates:
                return max(candidates)[1], False
        return None

    def restore(self, key: str, restore_keys: Sequence[str], workdir: Path) -> CacheOutcome:
        found = self._find(key, restore_keys)
        if found is None:
            return CacheOutcome(key, hit=False, restored_key=None)
        restored, exact = found
        with tarfile.open(self._entry(restored).with_suffix(".tar.gz")) as archive:
            archive.extractall(workdir, filter="data")
        return CacheOutcome(key, hit=exact, restored_key=restored)

    def save(self, key: str, paths: Sequence[str], workdir: Path) -> bool:
        """Save once per key; returns whether anything was written."""
        entry = self._entry(key)
        if entry.with_suffix(".tar.gz").exists():
            return False
        sources = [workdir / p for p in paths if (workdir / p).exists()]
        if not sources:
            return False
        self.root.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(dir=self.root, suffix=".partial")
        os.close(handle)
        with tarfile.open(temp, "w:gz", compresslevel=1) as archive:
            for source in sources:
                archive.add(source, arcname=str(source.relative_to(workdir)))
        Path(temp).replace(entry.with_suffix(".tar.gz"))
        meta = {"key": key, "saved_at": time.time()}
        private_file(entry.with_suffix(".json"), json.dumps(meta))
        return True
