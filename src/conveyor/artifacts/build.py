"""Building a service: its command in a private workspace, its outputs in one archive.

This is the "build once" half of "build once, promote the same bytes", and it stops at the
bytes: ``build_archive`` yields the archive, its digest and the facts its provenance will
state, and whoever called it hands them on (the CLI uploads them to the server, which keeps
the bytes, signs the provenance and records the artifact). Nothing here opens the state
store or touches the signing key -- a build runs on a laptop or in a CI job, and the code
being vouched for must not hold the key that vouches for it.

A build takes a slot of the project's build queue (``slots``), copies the project into a
workspace of its own (``workspace``), runs the command there (``command``) and archives the
outputs from there (``archive``). So builds running at once never share a directory, never
archive each other's outputs, and never write into the project tree; the same sources give
the same digest alone or fifty at once, in a fresh clone or an old one.

Provenance is read from git (at the project root, the tree the workspace copies) once the
build has its slot, just before the workspace is made, and the workspace exports exactly
that commit, so the commit the record names is the one that was built.

A service with ``run_as`` is built as that user (``run_as``): its workspace is handed to it
(``workspace.hand_to``) and the command started as it, so the build cannot read
``.conveyor/`` or the project's other files beyond the copy; when the command is done the
tree is reclaimed (``run_as.reclaim``) before it is archived as root, so nothing the build
left running can swap a file for a link to one only root may read.

The config package is written separately; ``ServiceSpec`` states the little this module
needs from a service config, so either side can change without importing the other.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from conveyor import __version__
from conveyor.artifacts.archive import create_archive
from conveyor.artifacts.command import command_argv, new_log_path, run_command
from conveyor.artifacts.gitinfo import git_info
from conveyor.artifacts.globs import Globs
from conveyor.artifacts.provenance import BuildFacts
from conveyor.artifacts.slots import build_slot
from conveyor.artifacts.workspace import hand_to, populate, private_home, remove_tree
from conveyor.errors import BuildFailed
from conveyor.layout import Layout
from conveyor.run_as import CREATE_HINT, CannotSwitch, User, current, reclaim, require

ARCHIVE_NAME = "artifact.tar.gz"


class BuildSpec(Protocol):
    @property
    def run(self) -> str | Sequence[str]: ...
    @property
    def outputs(self) -> Sequence[str]: ...
    @property
    def timeout(self) -> float: ...
    @property
    def inputs(self) -> Sequence[str] | None: ...


class ServiceSpec(Protocol):
    """What building needs from a service's config (``config.ServiceConfig`` fits)."""

    @property
    def path(self) -> str: ...
    @property
    def build(self) -> BuildSpec: ...
    @property
    def run_as(self) -> str | None: ...


@dataclass(frozen=True)
class BuiltArchive:
    """One finished build, before anyone has stored or signed it."""

    service: str
    digest: str  # "sha256:<hex>" of the archive bytes
    path: Path  # the archive file; valid only inside build_archive's context manager
    facts: BuildFacts  # what the signed provenance will state
    log_path: Path
    duration: float  # seconds, waiting for a slot included


@contextlib.contextmanager
def build_archive(
    layout: Layout,
    service_name: str,
    service: ServiceSpec,
    *,
    log: Callable[[str], None] | None = None,
    on_wait: Callable[[str], None] | None = None,
    pipeline: Mapping[str, Any] | None = None,
    max_parallel: int | None = None,
) -> Iterator[BuiltArchive]:
    """Build ``service_name`` in a workspace of its own; yield the archive while it exists.

    ``log`` receives the build's output line by line; ``on_wait`` is told when the build
    waits for a slot of the queue (``max_parallel`` wide, default the core count). Raises
    ``BuildFailed`` with the log's tail and a hint. The workspace is gone before the archive
    is yielded; the archive is gone when the block ends.
    """
    started = time.monotonic()
    layout = Layout(layout.root.resolve())  # git and the copy run in other directories
    project_dir = (layout.root / service.path).resolve()
    if not project_dir.is_dir():
        raise BuildFailed(
            f"the directory of service '{service_name}' does not exist: {project_dir}",
            hint=f"check services.{service_name}.path in conveyor.yaml",
        )
    build = service.build
    user = build_user(service_name, service.run_as)
    argv, command_text = command_argv(build.run, service_name)
    inputs = None if build.inputs is None else tuple(build.inputs)
    if inputs is not None:
        Globs.compile(inputs)  # a malformed pattern fails now, not after the queue
    log_path = new_log_path(layout.directory(layout.builds), service_name)
    with private_home(layout.directory(layout.workspaces), service_name) as home:
        with build_slot(layout.build_slots, max_parallel, on_wait):
            started_at = time.time()
            # Read once the build may start: a commit made while it queued is what it builds.
            source = git_info(layout.root)  # the tree the workspace copies
            workspace = populate(
                home,
                layout.root,
                source,
                service_name=service_name,
                service_path=service.path,
                inputs=inputs,
            )
            try:
                workdir = workspace.root / service.path
                workdir.mkdir(parents=True, exist_ok=True)  # git keeps no empty directories
                env = workspace.environment(os.environ)
                switch = None if user is None else hand_to(workspace, user)
                if switch is not None:
                    env.update(switch.environment())
                run_command(
                    argv,
                    workdir,
                    env,
                    build.timeout,
                    log_path,
                    service_name,
                    log,
                    user=user,
                )
                if user is not None:
                    reclaim(workspace.tree)
                archive = create_archive(workdir, build.outputs, home / ARCHIVE_NAME)
            finally:
                remove_tree(workspace.tree)
            finished_at = time.time()
        facts = BuildFacts(
            digest=archive.digest,
            service=service_name,
            command=command_text,
            outputs=tuple(build.outputs),
            source=source,
            source_uri=f"git+file://{project_dir}",
            files=archive.files,
            size=archive.size,
            started=started_at,
            finished=finished_at,
            builder_version=__version__,
            pipeline=pipeline,
            workspace=workspace.facts,
        )
        yield BuiltArchive(
            service=service_name,
            digest=archive.digest,
            path=archive.path,
            facts=facts,
            log_path=log_path,
            duration=time.monotonic() - started,
        )


def build_user(service_name: str, run_as: str | None) -> User | None:
    """The user the build of ``service_name`` runs as (None: as this process); BuildFailed
    before anything runs when ``run_as`` names one this host lacks or we may not become."""
    if run_as is None:
        return None
    try:
        return require(run_as, current())
    except CannotSwitch as exc:
        raise BuildFailed(
            f"the build of '{service_name}' runs as {run_as!r} (services.{service_name}.run_as "
            f"or the project's run_as), but {exc.message}",
            hint=f"build as root, as CI does (create the user there: {CREATE_HINT}), or "
            f"set services.{service_name}.run_as to a user of this host",
        ) from None


__all__ = [
    "BuildSpec",
    "BuiltArchive",
    "ServiceSpec",
    "build_archive",
    "build_user",
]
