"""Deployment markers on /metrics: what runs where, and when releases started and ended.

Two gauge families, so Grafana (or any Prometheus client) can draw a release as an
annotation from a query and label panels with the version users get:

* ``conveyor_release_info{service,env,version,revision} 1`` -- the release users get in
  each environment (the newest that succeeded);
* ``conveyor_release_timestamp_seconds{service,env,version,revision,event}`` -- when the
  newest release of each environment ``started`` (was created) and, once it ended,
  ``finished`` (with its ``phase``: succeeded, rolled_back, failed, ...). An annotation
  query: ``changes(conveyor_release_timestamp_seconds{event="started"}[1m]) > 0``.
"""

from __future__ import annotations

from collections.abc import Iterable

from conveyor.store.insight_repo import ReleaseMarker


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(m: ReleaseMarker, **extra: str) -> str:
    pairs = {
        "service": m.service,
        "env": m.env,
        "version": m.version,
        "revision": str(m.revision),
        **extra,
    }
    return ",".join(f'{k}="{_escape(v)}"' for k, v in pairs.items())


def release_metrics(markers: Iterable[ReleaseMarker]) -> str:
    """Prometheus text exposition (0.0.4) of the markers."""
    info: list[str] = []
    stamps: list[str] = []
    for m in markers:
        if not m.latest:
            info.append(f"conveyor_release_info{{{_labels(m)}}} 1")
            continue
        stamps.append(
            f"conveyor_release_timestamp_seconds{{{_labels(m, event='started')}}} {m.created_at!r}"
        )
        if m.done:
            labels = _labels(m, event="finished", phase=m.phase)
            stamps.append(f"conveyor_release_timestamp_seconds{{{labels}}} {m.updated_at!r}")
    return (
        "\n".join(
            [
                "# HELP conveyor_release_info The release users get, per service and environment.",
                "# TYPE conveyor_release_info gauge",
                *info,
                "# HELP conveyor_release_timestamp_seconds When the newest release of each service "
                "and environment started and finished (Unix seconds).",
                "# TYPE conveyor_release_timestamp_seconds gauge",
                *stamps,
            ]
        )
        + "\n"
    )
