"""The file-system artifact store: archives named by the sha256 of their bytes.

Layout under ``<project>/.conveyor/``::

    artifacts/sha256/<hex>.tar.gz   the immutable archives (read-only files)
    artifacts/sha256/<hex>.intoto.jsonl   each archive's signed provenance (see ``signing``)
    unpacked/<hex>/                 each archive extracted once, for instances to run from

Immutability is enforced by construction rather than by checks: an archive is written to a
temporary file in the same directory and then hard-linked to its final name, which fails if
that name exists -- so an existing digest is never overwritten, even by two builds racing,
and a reader never sees a half-written file. Unpacking extracts to a temporary directory and
renames it into place for the same reasons.

Bytes on disk can still rot or be edited, so ``verify`` re-hashes them, and ``unpack``
verifies before every use: a deploy must run exactly the bytes that were built.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tarfile
import tempfile
from pathlib import Path

from conveyor.artifacts.archive import file_digest
from conveyor.errors import NotFound, Refused

_DIGEST = re.compile(r"sha256:([0-9a-f]{64})")
_CHUNK = 1 << 20


class ArtifactStore:
    """Content-addressed archives under ``<project_root>/.conveyor``."""

    def __init__(self, project_root: Path) -> None:
        state = project_root / ".conveyor"
        self.state = state
        self.objects = state / "artifacts" / "sha256"
        self.unpacked = state / "unpacked"

    def path(self, digest: str) -> Path:
        """Where the archive for ``digest`` lives (whether or not it exists)."""
        return self.objects / f"{_hex(digest)}.tar.gz"

    def exists(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def envelope_path(self, digest: str) -> Path:
        """Where the signed provenance (DSSE envelopes, one per line) of ``digest`` lives."""
        return self.objects / f"{_hex(digest)}.intoto.jsonl"

    def put_envelope(self, digest: str, data: bytes) -> bool:
        """Store ``digest``'s provenance unless it has some already; True if ``data`` was kept.

        Same write-then-link as ``put``: the first envelope of a digest is never replaced.
        """
        self.objects.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=self.objects, prefix=".tmp-", suffix=".jsonl")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            tmp.chmod(0o444)
            try:
                os.link(tmp, self.envelope_path(digest))
            except FileExistsError:
                return False
            return True
        finally:
            tmp.unlink(missing_ok=True)

    def put(self, archive: Path) -> str:
        """Store a copy of ``archive`` under its digest and return the digest.

        If the digest is already stored, the stored file is left untouched.
        """
        self.objects.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        fd, tmp_name = tempfile.mkstemp(dir=self.objects, prefix=".tmp-", suffix=".tar.gz")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out, archive.open("rb") as src:
                while chunk := src.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            tmp.chmod(0o444)
            name = f"sha256:{digest.hexdigest()}"
            with contextlib.suppress(FileExistsError):
                os.link(tmp, self.path(name))
            return name
        finally:
            tmp.unlink(missing_ok=True)

    def verify(self, digest: str) -> None:
        """Re-hash the stored bytes; raise Refused if they no longer match their name."""
        path = self.path(digest)
        if not path.is_file():
            raise NotFound(
                f"artifact {digest} is not in the artifact store ({self.objects})",
                hint="rebuild the service (conveyor build <service>) or restore "
                ".conveyor/artifacts from a backup",
            )
        actual = file_digest(path)
        if actual != digest:
            raise Refused(
                f"artifact {digest} is corrupt: stored bytes hash to {actual}",
                hint=f"delete {path} and rebuild the service, or restore it from a backup; "
                "never deploy it as it is",
            )

    def unpack(self, digest: str) -> Path:
        """The artifact's files, extracted once, after checking the archive is intact."""
        self.verify(digest)
        final = self.unpacked / _hex(digest)
        if final.is_dir():
            return final
        self.unpacked.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=self.unpacked, prefix=".tmp-"))
        try:
            try:
                with tarfile.open(self.path(digest), mode="r:gz") as tar:
                    tar.extractall(staging, filter="data")
            except (tarfile.TarError, OSError) as exc:
                raise Refused(
                    f"artifact {digest} cannot be unpacked safely: {exc}",
                    hint="rebuild the service with `conveyor build`; artifacts must hold only "
                    "plain files, directories and links that stay inside them",
                ) from exc
            try:
                staging.rename(final)
            except OSError:
                if not final.is_dir():  # not simply a concurrent unpack that won the race
                    raise
            return final
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)


def _hex(digest: str) -> str:
    match = _DIGEST.fullmatch(digest)
    if match is None:
        raise NotFound(
            f"'{digest}' is not an artifact digest",
            hint="artifact digests look like sha256:<64 hex characters>; "
            "see `conveyor artifacts` for the recorded ones",
        )
    return match.group(1)
