"""Plans of releases written before plans existed (schema 0001, or a server of that version).

Migration 0002 fills ``releases.plan`` from these; ``rows.release`` uses them too for a row
whose plan is NULL, which is what a server of the previous version writes while an old and
a new server overlap during an upgrade. The shape they read is frozen: it is the 0001
``spec`` column.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

TRIGGER_DEFAULTS = {
    "error_rate": 0.05,
    "min_requests": 20,
    "window": 10.0,
    "max_restarts": 2,
    "verification": 15.0,
}
INSTANCE_DEFAULTS = {
    "command": "",
    "port_env": "PORT",
    "readiness": None,
    "liveness": None,
    "stop_grace": 10.0,
    "drain_timeout": 30.0,
}


def legacy_plan(row: Mapping[str, Any], commit: str | None) -> dict[str, Any]:
    """The plan of a release stored before plans existed, from what it did store."""
    spec = json_object(row["spec"])
    rollout = spec.get("rollout") or {}
    instance = {**INSTANCE_DEFAULTS, **(spec.get("instance") or {})}
    strategy = rollout.get("strategy") or {"kind": "recreate"}
    stable = None
    if row["stable_release_id"] is not None and rollout.get("stable_version"):
        stable = {
            "release_id": row["stable_release_id"],
            "revision": rollout.get("stable_revision") or 0,
            "version": rollout["stable_version"],
            "desired": rollout.get("stable_desired") or 0,
        }
    return {
        "format": 1,
        "service": row["service"],
        "env": row["env"],
        "artifact": row["artifact_digest"],
        "commit": commit,
        "config": json_object(row["config"]),
        "instance": instance,
        "desired": row["instances"],
        "strategy": strategy,
        "progress_deadline": rollout.get("progress_deadline", 60.0),
        "triggers": {**TRIGGER_DEFAULTS, **(rollout.get("triggers") or {})},
        "preview_check": rollout.get("preview_check", True),
        "analysis": {},
        "notify": [],
        "router": None,
        "pinned_port": None,
        "stable": stable,
    }


def json_object(value: object) -> dict[str, Any]:
    if isinstance(value, str):
        value = json.loads(value)
    return dict(value) if isinstance(value, Mapping) else {}
