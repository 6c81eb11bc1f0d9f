"""Build here, record there: a service's archive handed to the server like an OCI push.

A build runs where it is asked for (a laptop, a CI job) and what it produced reaches the
project in two requests (``docs/api.md``, Artifacts): the bytes
(``PUT /api/v1/blobs/{digest}``, streamed, checked by the server against the digest), then
the record (``POST /api/v1/artifacts`` with the build's facts). The server keeps the bytes,
signs the provenance with a key the CLI never sees, and says whether the digest was new.
``conveyor build``, ``deploy --build``, a pipeline's build job and the demo all come here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conveyor.artifacts.build import ServiceSpec, build_archive
from conveyor.cli.client import ApiClient, blob_path
from conveyor.layout import Layout


@dataclass(frozen=True)
class Published:
    """An artifact as the server recorded it (``docs/api.md``, Artifact)."""

    artifact: Mapping[str, Any]
    reused: bool
    duration: float
    log_path: Path

    @property
    def digest(self) -> str:
        return str(self.artifact["digest"])

    def to_json(self) -> dict[str, Any]:
        return {
            "artifact": dict(self.artifact),
            "reused": self.reused,
            "duration": self.duration,
            "log": str(self.log_path),
        }


def build_and_publish(
    client: ApiClient,
    layout: Layout,
    name: str,
    service: ServiceSpec,
    *,
    log: Callable[[str], None] | None = None,
    on_wait: Callable[[str], None] | None = None,
    pipeline: Mapping[str, Any] | None = None,
) -> Published:
    """Build ``name`` and hand its archive and facts to the server."""
    started = time.monotonic()
    with build_archive(layout, name, service, log=log, on_wait=on_wait, pipeline=pipeline) as built:
        client.put_file(blob_path(built.digest), built.path)
        answer = client.post(
            "/api/v1/artifacts",
            {"service": name, "digest": built.digest, "build": built.facts.to_json()},
        )
    return Published(
        artifact=answer["artifact"],
        reused=bool(answer.get("reused")),
        duration=time.monotonic() - started,
        log_path=built.log_path,
    )


def print_published(name: str, published: Published) -> None:
    from conveyor.cli.render import esc, out

    a = published.artifact
    state = "unchanged, reused" if published.reused else "stored"
    dirty = " (dirty tree)" if a.get("dirty") else ""
    out().print(
        f"[green]built[/] {esc(name)} {esc(a['digest'])} ({state}) in {published.duration:.1f}s\n"
        f"  commit {esc(a.get('commit') or '-')} on {esc(a.get('branch') or '-')}{dirty}, "
        f"{a.get('files')} files, {a.get('size')} bytes"
    )
