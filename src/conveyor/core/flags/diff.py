"""What a change changed: the leaves of two flag JSONs that differ, by dotted path.

Used for the ledger (every flag change carries its diff), for drift between conveyor.yaml
and the live set, and by the CLI to show both. Lists are compared whole (a rule list that
was reordered is a different rule list: order decides).
"""

from __future__ import annotations

from typing import Any

MISSING = None


def diff(before: Any, after: Any, path: str = "") -> list[dict[str, Any]]:
    """``[{path, before, after}, ...]``, sorted by path; empty when equal."""
    if isinstance(before, dict) and isinstance(after, dict):
        changes: list[dict[str, Any]] = []
        for key in sorted(set(before) | set(after), key=str):
            where = f"{path}.{key}" if path else str(key)
            changes.extend(diff(before.get(key, MISSING), after.get(key, MISSING), where))
        return changes
    if before == after and type(before) is type(after):
        return []
    return [{"path": path or "(flag)", "before": before, "after": after}]
