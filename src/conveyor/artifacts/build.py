"""Building a service: run its command once, archive the outputs, keep the bytes forever.

This is the "build once" half of "build once, promote the same bytes". The build runs in the
service directory in its own process group, so a timeout kills everything it started, not
just the shell; its output goes to a log file under ``.conveyor/builds`` (and, optionally, to
a live callback) because a failing build is only useful with its log.

Provenance is read from git *before* the command runs: the build may write untracked files
(bytecode, bundles), and those must not make the record claim the sources were dirty.

Unchanged inputs archive to the same bytes, hence the same digest: the second build stores
nothing new and reports ``reused=True`` with the record of the first.

Every build signs its provenance (``signing``): the envelope is written before the record, so
a recorded artifact always has one, and a reused digest keeps the envelope of its first build.

The config package is written separately; ``ServiceSpec`` states the little this module
needs from a service config, so either side can change without importing the other.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shlex
import signal
import subprocess
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Protocol

from conveyor import __version__
from conveyor.artifacts.archive import create_archive
from conveyor.artifacts.gitinfo import git_info
from conveyor.artifacts.provenance import BuildFacts
from conveyor.artifacts.signing import sign_build
from conveyor.artifacts.store import ArtifactStore
from conveyor.errors import BuildFailed, NotFound
from conveyor.store import ArtifactRecord, Store

TAIL_LINES = 30
_KILL_GRACE = 2.0
_STRAGGLER_GRACE = 0.5


class BuildSpec(Protocol):
    @property
    def run(self) -> str | Sequence[str]: ...
    @property
    def outputs(self) -> Sequence[str]: ...
    @property
    def timeout(self) -> float: ...


class ServiceSpec(Protocol):
    """What building needs from a service's config (``config.ServiceConfig`` fits)."""

    @property
    def path(self) -> str: ...
    @property
    def build(self) -> BuildSpec: ...


@dataclass(frozen=True)
class BuildResult:
    artifact: ArtifactRecord
    reused: bool
    duration: float
    log_path: Path


def build_service(
    project_root: Path,
    service_name: str,
    service: ServiceSpec,
    store: Store,
    artifacts: ArtifactStore,
    *,
    actor: str,
    log: Callable[[str], None] | None = None,
    pipeline: Mapping[str, Any] | None = None,
) -> BuildResult:
    """Build ``service_name`` and record its artifact; raise BuildFailed with the log's tail."""
    started = time.monotonic()
    started_at = time.time()
    workdir = (project_root / service.path).resolve()
    if not workdir.is_dir():
        raise BuildFailed(
            f"the directory of service '{service_name}' does not exist: {workdir}",
            hint=f"check services.{service_name}.path in conveyor.yaml",
        )
    source = git_info(workdir)
    argv, command_text = _argv(service.build.run, service_name)
    log_path = _new_log_path(project_root / ".conveyor" / "builds", service_name)
    _run(argv, workdir, service.build.timeout, log_path, service_name, log)

    tmp_dir = project_root / ".conveyor" / "tmp"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=tmp_dir, prefix="build-") as scratch:
        archive = create_archive(workdir, service.build.outputs, Path(scratch) / "out.tar.gz")
        had_file = artifacts.exists(archive.digest)
        stored = artifacts.put(archive.path)
    if stored != archive.digest:  # the file changed between writing and storing it
        raise BuildFailed(
            f"the archive of '{service_name}' changed while it was being stored",
            hint="run the build again; is something else writing to .conveyor/tmp?",
        )
    had_record = _known(store, archive.digest)
    signed = sign_build(
        artifacts,
        BuildFacts(
            digest=archive.digest,
            service=service_name,
            command=command_text,
            outputs=tuple(service.build.outputs),
            source=source,
            source_uri=f"git+file://{workdir}",
            files=archive.files,
            size=archive.size,
            started=started_at,
            finished=time.time(),
            builder_version=__version__,
            pipeline=pipeline,
        ),
    )
    duration = time.monotonic() - started
    candidate = ArtifactRecord(
        digest=archive.digest,
        service=service_name,
        commit=source.commit,
        branch=source.branch,
        dirty=source.dirty,
        created_at=time.time(),
        size=archive.size,
        files=archive.files,
        build_command=command_text,
        outputs=tuple(service.build.outputs),
        metadata={
            "build_duration": round(duration, 3),
            "build_log": str(log_path),
            "builder": {
                "conveyor": __version__,
                "python": platform.python_version(),
                "platform": platform.platform(),
            },
            "provenance": signed,
            **({"pipeline_run": str(pipeline.get("run"))} if pipeline is not None else {}),
        },
    )
    record = store.record_artifact(candidate, actor=actor)
    return BuildResult(
        artifact=record,
        reused=had_record or had_file,
        duration=time.monotonic() - started,
        log_path=log_path,
    )


def _argv(run: str | Sequence[str], service_name: str) -> tuple[list[str], str]:
    if isinstance(run, str):
        if not run.strip():
            raise BuildFailed(
                f"service '{service_name}' has an empty build command",
                hint=f"set services.{service_name}.build.run in conveyor.yaml",
            )
        return ["sh", "-c", run], run
    argv = list(run)
    if not argv:
        raise BuildFailed(
            f"service '{service_name}' has an empty build command",
            hint=f"set services.{service_name}.build.run in conveyor.yaml",
        )
    return argv, shlex.join(argv)


def _new_log_path(directory: Path, service_name: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in service_name)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    for attempt in range(100):
        suffix = "" if attempt == 0 else f"-{attempt}"
        path = directory / f"{safe}-{stamp}{suffix}.log"
        try:
            path.open("x").close()
        except FileExistsError:
            continue
        return path
    raise BuildFailed(f"cannot create a build log in {directory}", hint="clean up .conveyor/builds")


def _run(
    argv: list[str],
    workdir: Path,
    timeout: float,
    log_path: Path,
    service_name: str,
    log: Callable[[str], None] | None,
) -> None:
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    with log_path.open("ab") as log_file:
        try:
            proc = subprocess.Popen(
                argv,
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            raise BuildFailed(
                f"the build command of '{service_name}' cannot start: {exc.strerror or exc}",
                hint=f"check services.{service_name}.build.run in conveyor.yaml "
                "(is the program installed and on PATH?)",
            ) from exc
        assert proc.stdout is not None
        reader = threading.Thread(
            target=_pump, args=(proc.stdout, log_file, tail, log), daemon=True
        )
        reader.start()
        try:
            code = _wait(proc, reader, timeout)
        finally:
            if not reader.is_alive():
                proc.stdout.close()
    if code is None:
        raise BuildFailed(
            f"the build of '{service_name}' timed out after {timeout:g}s" + _render_tail(tail),
            hint=f"make the build faster or raise services.{service_name}.build.timeout "
            f"in conveyor.yaml; full log: {log_path}",
        )
    if code != 0:
        how = f"exit code {code}" if code > 0 else f"signal {signal.Signals(-code).name}"
        raise BuildFailed(
            f"the build of '{service_name}' failed ({how})" + _render_tail(tail),
            hint=f"fix the build (services.{service_name}.build.run in conveyor.yaml); "
            f"full log: {log_path}",
        )


def _wait(proc: subprocess.Popen[bytes], reader: threading.Thread, timeout: float) -> int | None:
    """The build's exit code once its output is drained, or None if it ran out of time."""
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        reader.join(timeout=_KILL_GRACE)
        return None
    reader.join(timeout=_STRAGGLER_GRACE)
    if reader.is_alive():
        # Something the build started still holds its output open: the group still exists
        # (so its id cannot have been reused), and the build itself is over.
        _signal_group(proc.pid, signal.SIGKILL)
        reader.join(timeout=_KILL_GRACE)
    return code


def _pump(
    stream: IO[bytes],
    log_file: IO[bytes],
    tail: deque[str],
    log: Callable[[str], None] | None,
) -> None:
    try:
        for raw in iter(stream.readline, b""):
            log_file.write(raw)
            log_file.flush()
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            tail.append(line)
            if log is not None:
                with contextlib.suppress(Exception):  # a broken display must not fail a build
                    log(line)
    except (OSError, ValueError):
        # The build was abandoned (timeout, or a detached straggler) and its files closed.
        return


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the build's whole process group, then reap the leader.

    Signalled before reaping: the unreaped leader keeps its pid (the group id) from being
    reused, so the signal cannot reach an unrelated process. A build is disposable; there is
    nothing for a gentler signal to save.
    """
    _signal_group(proc.pid, signal.SIGKILL)
    proc.wait()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _render_tail(tail: deque[str]) -> str:
    if not tail:
        return " with no output"
    lines = "\n".join(f"  | {line}" for line in tail)
    return f"; last {len(tail)} lines of output:\n{lines}"


def _known(store: Store, digest: str) -> bool:
    try:
        store.get_artifact(digest)
    except NotFound:
        return False
    return True
