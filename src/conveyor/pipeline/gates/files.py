"""Which files a gate looks at, and how it names them: shared by every file-reading gate."""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Sequence
from pathlib import Path

MAX_FILE_BYTES = 2_000_000
"""Larger files are data or build output, not where a credential is typed by hand."""
SKIPPED_DIRS = frozenset({".git", ".conveyor", ".venv", "venv", "node_modules", "__pycache__"})


def files_under(workdir: Path, paths: Sequence[str]) -> list[Path]:
    found: list[Path] = []
    for entry in paths or ["."]:
        root = (workdir / entry).resolve()
        if root.is_file():
            found.append(root)
            continue
        for directory, dirs, names in os.walk(root):
            dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS)
            for name in sorted(names):
                path = Path(directory) / name
                if path.is_file() and not path.is_symlink():
                    found.append(path)
    return found


def shown(path: Path, workdir: Path) -> str:
    try:
        return path.relative_to(workdir.resolve()).as_posix()
    except ValueError:
        return str(path)


def allowed(shown: str, allow: Sequence[str]) -> bool:
    return any(fnmatch.fnmatch(shown, pattern) for pattern in allow)
