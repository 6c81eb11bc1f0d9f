"""Instance records: the runtime's memory that survives the server.

One JSON file per instance under ``state_dir/instances/``, written atomically (temp file,
fsync, rename, fsync of the directory), so a server killed at any instant leaves either the
old record or the new one, never half of one. The record is written BEFORE a process is
spawned (pid null: "this instance is desired") and again right after (pid and start time),
and deleted only once the instance's process group is gone. Whatever moment the server dies
at, the next one finds enough to adopt, respawn, or finish a stop — never to duplicate.

A record names an instance's secrets by reference only (``SecretRef``); the values are read
again at every spawn. Records are 0600 in a 0700 directory: they hold the instance's config.
A record that cannot be read back — corrupt JSON, or a spec no process could be started
with (an environment name with ``=``, a NUL) — is set aside as ``<id>.corrupt`` with a
warning instead of stopping the server from starting.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from conveyor.core.model import InstanceSpec, ProbeSpec, SecretRef
from conveyor.layout import private_directory
from conveyor.runtime.local.environment import environment_problem

log = logging.getLogger(__name__)

FORMAT = 1
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_name(kind: str, value: str) -> None:
    """Names become file names: refuse anything that could escape its directory."""
    if not _NAME.fullmatch(value) or ".." in value:
        raise ValueError(f"{kind} {value!r} is not usable as a file name (letters, digits, ._-)")


@dataclass(frozen=True)
class InstanceRecord:
    spec: InstanceSpec
    port: int
    pid: int | None = None
    start_ticks: int | None = None
    restarts: int = 0
    started_at: float = 0.0
    stopping: bool = False

    def spawned(self, pid: int, start_ticks: int, started_at: float) -> InstanceRecord:
        return replace(self, pid=pid, start_ticks=start_ticks, started_at=started_at)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "spec": spec_to_json(self.spec),
            "port": self.port,
            "pid": self.pid,
            "start_ticks": self.start_ticks,
            "restarts": self.restarts,
            "started_at": self.started_at,
            "stopping": self.stopping,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> InstanceRecord:
        return cls(
            spec=spec_from_json(data["spec"]),
            port=int(data["port"]),
            pid=None if data.get("pid") is None else int(data["pid"]),
            start_ticks=None if data.get("start_ticks") is None else int(data["start_ticks"]),
            restarts=int(data.get("restarts", 0)),
            started_at=float(data.get("started_at", 0.0)),
            stopping=bool(data.get("stopping", False)),
        )


def spec_to_json(spec: InstanceSpec) -> dict[str, Any]:
    data = {
        "instance_id": spec.instance_id,
        "project": spec.project,
        "service": spec.service,
        "env": spec.env,
        "version": spec.version,
        "revision": spec.revision,
        "artifact_digest": spec.artifact_digest,
        "artifact_dir": str(spec.artifact_dir),
        "command": spec.command if isinstance(spec.command, str) else list(spec.command),
        "environment": dict(spec.environment),
        "port_env": spec.port_env,
        "readiness": None if spec.readiness is None else asdict(spec.readiness),
        "liveness": None if spec.liveness is None else asdict(spec.liveness),
        "stop_grace": spec.stop_grace,
        "secrets": {name: ref.to_json() for name, ref in spec.secrets.items()},
    }
    if spec.run_as is not None:  # who it runs as, so a restarted server respawns it the same
        data["run_as"] = spec.run_as
    return data


def spec_from_json(data: dict[str, Any]) -> InstanceSpec:
    """The spec of a record; ValueError for one no process could ever be started with."""
    command = data["command"]
    environment = {str(k): str(v) for k, v in data["environment"].items()}
    problem = environment_problem(environment)
    if problem is not None:
        raise ValueError(problem)
    return InstanceSpec(
        instance_id=str(data["instance_id"]),
        project=str(data["project"]),
        service=str(data["service"]),
        env=str(data["env"]),
        version=str(data["version"]),
        revision=int(data["revision"]),
        artifact_digest=str(data["artifact_digest"]),
        artifact_dir=Path(data["artifact_dir"]),
        command=command if isinstance(command, str) else tuple(str(c) for c in command),
        environment=environment,
        port_env=str(data["port_env"]),
        readiness=None if data.get("readiness") is None else ProbeSpec(**data["readiness"]),
        liveness=None if data.get("liveness") is None else ProbeSpec(**data["liveness"]),
        stop_grace=float(data["stop_grace"]),
        secrets={str(k): SecretRef.from_json(v) for k, v in (data.get("secrets") or {}).items()},
        run_as=None if data.get("run_as") is None else str(data["run_as"]),
    )


class RecordStore:
    """The ``instances/`` directory of a state dir."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        private_directory(directory)

    def path(self, instance_id: str) -> Path:
        check_name("instance id", instance_id)
        return self.directory / f"{instance_id}.json"

    def write(self, record: InstanceRecord) -> None:
        target = self.path(record.spec.instance_id)
        temp = target.with_name(f".{target.name}.tmp")
        data = json.dumps(record.to_json(), indent=1, sort_keys=True).encode()
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        temp.replace(target)
        self._sync_directory()

    def delete(self, instance_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(instance_id).unlink()
        self._sync_directory()

    def load_all(self) -> list[InstanceRecord]:
        """Every readable record; an unreadable one is set aside with a warning.

        A record that cannot be parsed cannot be adopted; moving it aside (rather than
        failing the whole server) lets its process, if any, be found as an orphan and killed.
        """
        records = []
        for path in sorted(self.directory.glob("*.json")):
            try:
                records.append(InstanceRecord.from_json(json.loads(path.read_text())))
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                self._set_aside(path, f"is unreadable ({exc})")
        for temp in self.directory.glob(".*.tmp"):
            temp.unlink(missing_ok=True)  # a write the previous server did not finish
        return records

    def set_aside(self, instance_id: str, why: str) -> None:
        """Keep a record that cannot be acted on for a human, out of the next start's way."""
        path = self.path(instance_id)
        if path.exists():
            self._set_aside(path, why)

    def _set_aside(self, path: Path, why: str) -> None:
        aside = path.with_suffix(".corrupt")
        log.warning("instance record %s %s; moved to %s", path, why, aside)
        with contextlib.suppress(FileNotFoundError):
            path.replace(aside)

    def _sync_directory(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
