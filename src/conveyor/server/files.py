"""Where a project's server publishes itself: `.conveyor/server.json` and its lock.

Kept apart from the server itself so the CLI can find a running server without importing
the web framework, the controller and the runtime (half a second on every command).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def state_dir(root: Path) -> Path:
    """`.conveyor/` of a project, created on first use, and kept out of the user's git."""
    path = root / ".conveyor"
    if not path.exists():
        path.mkdir(parents=True, exist_ok=True)
        (path / ".gitignore").write_text("# Conveyor's local state\n*\n")
    return path


def server_file(root: Path) -> Path:
    return root / ".conveyor" / "server.json"


def read_server_file(root: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(server_file(root).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
