"""Artifacts: deterministic archives of build outputs, stored by the sha256 of their bytes.

``ArtifactStoreProtocol`` is the seam the controller depends on; ``ArtifactStore`` (the local
file system under ``.conveyor/``) is the embedded implementation. A remote store (S3, an OCI
registry) would implement the same five methods.

Building (``build_archive``) is imported by the CLI and CI, which must not load the store's
or the signing key's code, so ``ArtifactStore`` is resolved on first use rather than on
import.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from conveyor.artifacts.archive import ArchiveInfo, create_archive, file_digest
from conveyor.artifacts.build import BuiltArchive, ServiceSpec, build_archive
from conveyor.artifacts.gitinfo import GitInfo, git_info
from conveyor.artifacts.provenance import BuildFacts, WorkspaceFacts

if TYPE_CHECKING:
    from conveyor.artifacts.store import ArtifactStore

_LAZY = {
    "ArtifactStore": "conveyor.artifacts.store",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


class ArtifactStoreProtocol(Protocol):
    """Where artifact bytes live. Digests are ``sha256:<64 hex>``; nothing is ever replaced."""

    def put(self, archive_path: Path) -> str:
        """Store the archive's bytes; return their digest. An existing digest is kept as is."""
        ...

    def exists(self, digest: str) -> bool: ...

    def path(self, digest: str) -> Path:
        """A local file holding the archive."""
        ...

    def verify(self, digest: str) -> None:
        """Raise ``Refused`` if the stored bytes no longer hash to ``digest``."""
        ...

    def unpack(self, digest: str) -> Path:
        """A directory with the artifact's files, verified first and extracted only once."""
        ...


__all__ = [
    "ArchiveInfo",
    "ArtifactStore",
    "ArtifactStoreProtocol",
    "BuildFacts",
    "BuiltArchive",
    "GitInfo",
    "ServiceSpec",
    "WorkspaceFacts",
    "build_archive",
    "create_archive",
    "file_digest",
    "git_info",
]
