"""Deterministic archives: the same build outputs always become the same bytes.

An artifact's identity is the sha256 of its archive, so anything that varies between two
builds of the same sources -- modification times, owners, umask, directory listing order,
the gzip header's timestamp and file name -- must not reach the archive. Entries are sorted,
times are 0, owners are root with empty names, and modes are reduced to 0o755 (anything
executable, and directories) or 0o644. What the user declared is included as-is (``.git``
and ``.conveyor`` excepted: they are state, not build outputs), so a listed ``__pycache__``
ships.

Symlinks are kept as links, rewritten relative to their own directory, and only if they point
inside the base directory: an artifact must carry its contents, not references into the
machine that built it.

What the archive cannot normalise is the compressor: the gzip stream is Python's ``zlib``
binding over the system's zlib, and another deflate implementation (zlib-ng, which some
distributions ship as their zlib) writes other bytes for the same tar. Builders that must
agree byte for byte need the same zlib, as they need the same compilers.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from conveyor.errors import BuildFailed

OUTPUTS_HINT = "check build.outputs in conveyor.yaml"
# .git is repository state; .conveyor is Conveyor's own state (and the archive being written,
# when a service's outputs are its whole directory at the project root).
SKIPPED_NAMES = frozenset({".git", ".conveyor"})
_COMPRESSLEVEL = 6
_CHUNK = 1 << 20


@dataclass(frozen=True)
class ArchiveInfo:
    """What was written: where, its digest, its size in bytes, and how many files it holds."""

    path: Path
    digest: str
    size: int
    files: int


@dataclass(frozen=True)
class _Entry:
    name: str  # POSIX path relative to the base
    source: Path
    kind: str  # "dir" | "file" | "link"
    mode: int
    link: str = ""


def create_archive(base: Path, outputs: Sequence[str], dest: Path) -> ArchiveInfo:
    """Write ``outputs`` (paths relative to ``base``) to ``dest`` as a reproducible .tar.gz."""
    entries = collect(base, outputs)
    digest = hashlib.sha256()
    with dest.open("wb") as raw:
        sink = _HashingWriter(raw, digest)
        with (
            gzip.GzipFile(
                filename="", mode="wb", fileobj=sink, mtime=0, compresslevel=_COMPRESSLEVEL
            ) as gz,
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
        ):
            for entry in entries:
                _add(tar, entry)
        size = sink.size
    files = sum(1 for e in entries if e.kind == "file")
    return ArchiveInfo(path=dest, digest=f"sha256:{digest.hexdigest()}", size=size, files=files)


def collect(base: Path, outputs: Sequence[str]) -> list[_Entry]:
    """Every entry the archive will hold, sorted, with parents before children."""
    real_base = base.resolve()
    found: dict[str, _Entry] = {}
    for output in outputs:
        relative = _relative(output)
        path = real_base.joinpath(*relative.parts) if relative.parts else real_base
        if relative.parts and not _inside(real_base, path.parent):
            raise BuildFailed(
                f"build output '{output}' lies behind a symlink that leaves {base}",
                hint=f"{OUTPUTS_HINT}: name the real directory, inside the service directory",
            )
        if not os.path.lexists(path):
            raise BuildFailed(
                f"build output '{output}' does not exist in {base}",
                hint=f"{OUTPUTS_HINT} (paths are relative to the service directory), "
                "or make the build command create it",
            )
        for parent in list(relative.parents)[:-1]:
            found.setdefault(str(parent), _Entry(str(parent), real_base / parent, "dir", 0o755))
        for entry in _walk(real_base, path, relative, output):
            found[entry.name] = entry
    found.pop(".", None)
    return sorted(found.values(), key=lambda e: PurePosixPath(e.name).parts)


def _relative(output: str) -> PurePosixPath:
    pure = PurePosixPath(output.strip())
    if pure.is_absolute() or ".." in pure.parts or not output.strip():
        raise BuildFailed(
            f"build output '{output}' is not a path inside the service directory",
            hint=f"{OUTPUTS_HINT}: use relative paths such as 'dist/' or 'app.py'",
        )
    return PurePosixPath(*[p for p in pure.parts if p != "."])


def _walk(base: Path, path: Path, relative: PurePosixPath, output: str) -> Iterator[_Entry]:
    if path.name in SKIPPED_NAMES:
        return
    name = str(relative) if relative.parts else "."
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode):
        yield _Entry(name, path, "link", 0o777, _link_target(base, path, output))
    elif stat.S_ISDIR(info.st_mode):
        yield _Entry(name, path, "dir", 0o755)
        for child in sorted(p.name for p in path.iterdir()):
            yield from _walk(base, path / child, relative / child, output)
    elif stat.S_ISREG(info.st_mode):
        executable = info.st_mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        yield _Entry(name, path, "file", 0o755 if executable else 0o644)
    else:
        raise BuildFailed(
            f"build output '{output}' contains '{name}', which is not a file, directory or symlink",
            hint=f"{OUTPUTS_HINT}: leave sockets, pipes and devices out of the outputs",
        )


def _link_target(base: Path, link: Path, output: str) -> str:
    try:
        target = link.resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop
        raise BuildFailed(
            f"build output '{output}' contains the unresolvable symlink "
            f"'{link.relative_to(base)}': {exc}",
            hint=f"{OUTPUTS_HINT}: remove the broken link from the outputs",
        ) from exc
    if not _inside(base, target):
        raise BuildFailed(
            f"build output '{output}' contains the symlink '{link.relative_to(base)}' "
            f"pointing outside the service directory (to {target})",
            hint=f"{OUTPUTS_HINT}: copy the file into the outputs instead of linking to it",
        )
    return os.path.relpath(target, link.parent.resolve())


def _inside(base: Path, path: Path) -> bool:
    try:
        real = path.resolve()
    except (OSError, RuntimeError):
        return False
    return real == base or base in real.parents


def _add(tar: tarfile.TarFile, entry: _Entry) -> None:
    info = tarfile.TarInfo(entry.name)
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = entry.mode
    if entry.kind == "dir":
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    elif entry.kind == "link":
        info.type = tarfile.SYMTYPE
        info.linkname = entry.link
        tar.addfile(info)
    else:
        with entry.source.open("rb") as handle:
            info.size = os.fstat(handle.fileno()).st_size
            tar.addfile(info, _Exactly(handle, info.size))


class _Exactly(io.RawIOBase):
    """Reads at most ``size`` bytes, so a file growing mid-archive cannot corrupt the tar."""

    def __init__(self, handle: BinaryIO, size: int) -> None:
        self._handle = handle
        self._left = size

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        want = self._left if size < 0 else min(size, self._left)
        data = self._handle.read(want)
        self._left -= len(data)
        return data


class _HashingWriter(io.RawIOBase):
    """A write-through file that hashes and counts what passes, so nothing is read twice."""

    def __init__(self, raw: BinaryIO, digest: hashlib._Hash) -> None:
        self._raw = raw
        self._digest = digest
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(data)
        self._raw.write(view)
        self._digest.update(view)
        self.size += view.nbytes
        return view.nbytes


def file_digest(path: Path) -> str:
    """The ``sha256:<hex>`` of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"
