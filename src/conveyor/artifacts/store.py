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
import fcntl
import hashlib
import logging
import os
import re
import stat
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

from conveyor.artifacts.archive import file_digest
from conveyor.errors import NotFound, Refused
from conveyor.layout import Layout, make_read_only, private_file, remove_tree

_DIGEST = re.compile(r"sha256:([0-9a-f]{64})")
_CHUNK = 1 << 20

log = logging.getLogger("conveyor.artifacts")


class ArtifactStore:
    """Content-addressed archives under ``<project_root>/.conveyor``."""

    def __init__(self, project_root: Path) -> None:
        layout = Layout(project_root)
        self.layout = layout
        self.state = layout.state
        self.objects = layout.artifacts
        self.unpacked = layout.unpacked

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

    def append_envelope(self, digest: str, line: bytes) -> None:
        """Add one more signed statement about ``digest`` (another service built to it).

        One write of one line with O_APPEND: concurrent writers interleave whole lines.
        """
        self.objects.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.envelope_path(digest), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o444)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

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
        """The artifact's files, after checking the archive and the unpacked tree are intact.

        The tree is extracted once and its fingerprint (every path, kind, mode, size and
        content hash) kept beside it; each later call re-checks the tree against it, so a
        file changed after extraction — by an instance, by anyone — is never served under
        the artifact's digest: the tree is thrown away and extracted again. Unpacks of one
        digest take turns (a lock file per digest), so none removes a tree another returned.
        """
        self.verify(digest)
        name = _hex(digest)
        final = self.unpacked / name
        fingerprint_file = self.unpacked / f"{name}.tree"
        self.unpacked.mkdir(parents=True, exist_ok=True)
        with _exclusive(self.unpacked / f"{name}.lock"):
            if final.is_dir():
                try:
                    expected: str | None = fingerprint_file.read_text()
                except OSError:
                    expected = None
                if expected is not None and tree_fingerprint(final) == expected:
                    return final
                log.warning(
                    "the unpacked tree of %s changed since extraction; unpacking again", digest
                )
                remove_tree(final)
            staging = Path(tempfile.mkdtemp(dir=self.unpacked, prefix=".tmp-"))
            try:
                try:
                    with tarfile.open(self.path(digest), mode="r:gz") as tar:
                        tar.extractall(staging, filter="data")
                    # Read-only before it is visible: an instance cannot change the bytes
                    # that are served under this digest (see layout.read_only_mode).
                    make_read_only(staging)
                except (tarfile.TarError, OSError) as exc:
                    raise Refused(
                        f"artifact {digest} cannot be unpacked safely: {exc}",
                        hint="rebuild the service with `conveyor build`; artifacts must hold "
                        "only plain files, directories and links that stay inside them",
                    ) from exc
                private_file(fingerprint_file, tree_fingerprint(staging))
                staging.rename(final)
                return final
            finally:
                if staging.exists():
                    with contextlib.suppress(OSError):
                        remove_tree(staging)


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def tree_fingerprint(root: Path) -> str:
    """sha256 over every entry of a tree: relative path, kind, permission bits, size, and
    the content (files) or target (links). Equal trees, equal fingerprints."""
    total = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        relative = path.relative_to(root).as_posix()
        if stat.S_ISLNK(info.st_mode):
            entry = f"L {relative} {path.readlink()}"
        elif stat.S_ISDIR(info.st_mode):
            entry = f"D {relative} {stat.S_IMODE(info.st_mode):o}"
        else:
            entry = (
                f"F {relative} {stat.S_IMODE(info.st_mode):o} {info.st_size} {file_digest(path)}"
            )
        total.update(entry.encode("utf-8", "surrogateescape") + b"\n")
    return total.hexdigest()


def _hex(digest: str) -> str:
    match = _DIGEST.fullmatch(digest)
    if match is None:
        raise NotFound(
            f"'{digest}' is not an artifact digest",
            hint="artifact digests look like sha256:<64 hex characters>; "
            "see `conveyor artifacts` for the recorded ones",
        )
    return match.group(1)
