"""Identity of what runs: the template key and the config version.

A *template* is everything that makes two instances interchangeable: the artifact's bytes, the
config injected into it, and how it is started. Instances are grouped by template, not by
release, for the same reason Kubernetes keys ReplicaSets by pod-template-hash: a rollback to a
release whose instances are still warm finds them under the same key and becomes a traffic
switch instead of a cold start. Instance counts are not part of it; scaling is not a new version.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _canonical(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def config_version(config: Mapping[str, str]) -> str:
    """Short, stable hash of a release's config, shown in `status` and diffed in `history`."""
    return "c" + hashlib.sha256(_canonical(dict(config))).hexdigest()[:10]


def template_key(
    artifact_digest: str,
    config: Mapping[str, str],
    command: str | Sequence[str],
    port_env: str,
) -> str:
    payload = {
        "artifact": artifact_digest,
        "config": dict(config),
        "command": command if isinstance(command, str) else list(command),
        "port_env": port_env,
    }
    return "t" + hashlib.sha256(_canonical(payload)).hexdigest()[:10]


def merge_config(*layers: Mapping[str, str]) -> dict[str, str]:
    """Later layers win key by key: service defaults < environment overrides < `--set`."""
    merged: dict[str, str] = {}
    for layer in layers:
        merged.update(layer)
    return merged


def parse_assignments(pairs: Sequence[str]) -> dict[str, str]:
    """Parse `--set KEY=VALUE` pairs; raises ValueError naming the bad pair."""
    result: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--set expects KEY=VALUE, got {pair!r}")
        if not _ENV_NAME.fullmatch(key):
            raise ValueError(
                f"--set key {key!r} is not a valid environment variable name "
                "(letters, digits and _, not starting with a digit)"
            )
        result[key] = value
    return result
