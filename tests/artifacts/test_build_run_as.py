"""Builds with ``run_as``: the command runs as that user, in a workspace it owns.

Real builds, a real unprivileged user (skipped without root and that user, saying how). The
build can write its copy of the project and produce outputs, cannot read ``.conveyor/``, and
what it leaves behind is taken back before it is archived as root, so a link it planted to a
file only root may read is refused rather than followed.
"""

from __future__ import annotations

import dataclasses
import tarfile
from pathlib import Path

import pytest

from conveyor.artifacts.build import build_archive
from conveyor.errors import BuildFailed
from conveyor.layout import Layout
from tests.run_as_support import RUN_AS, TOKEN, needs_run_as, project, the_user

from .specs import Service, service

pytestmark = pytest.mark.integration
__all__ = ["project"]  # the fixture, imported to be used


def files_of(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        return {
            m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isfile()
        }


def with_app(layout: Layout) -> None:
    (layout.root / "svc").mkdir()
    (layout.root / "svc" / "app.py").write_text("print('v1')\n")


@needs_run_as
def test_a_build_runs_as_its_user_and_cannot_read_the_state(project: Layout) -> None:
    user = the_user()
    with_app(project)
    build = (
        "mkdir -p dist && cp app.py dist/ && id -u > dist/uid && echo $HOME > dist/home && "
        f"(cat {project.admin_token} > dist/token 2>/dev/null || echo denied > dist/token)"
    )
    spec = dataclasses.replace(service(build), run_as=RUN_AS)
    with build_archive(project, "web", spec) as built:
        files = files_of(built.path)
    assert files["dist/uid"].decode().strip() == str(user.uid)
    assert files["dist/token"] == b"denied\n"
    assert files["dist/home"].decode().startswith(str(project.workspaces))
    assert files["dist/app.py"] == b"print('v1')\n"
    assert TOKEN.encode() not in b"".join(files.values())


@needs_run_as
def test_a_link_the_build_planted_is_not_followed_when_archiving(project: Layout) -> None:
    with_app(project)
    plant = f"mkdir -p dist && ln -s {project.admin_token} dist/token"
    spec = dataclasses.replace(service(plant), run_as=RUN_AS)
    with pytest.raises(BuildFailed) as failed, build_archive(project, "web", spec):
        pass
    assert "pointing outside the service directory" in failed.value.message
    assert TOKEN not in failed.value.message


def test_a_build_user_this_host_lacks_fails_before_anything_runs(tmp_path: Path) -> None:
    root = tmp_path / "project"
    (root / "svc").mkdir(parents=True)
    spec = Service(run_as="no-such-user-xyz")
    with pytest.raises(BuildFailed) as failed, build_archive(Layout(root), "web", spec):
        pass
    assert "the build of 'web' runs as 'no-such-user-xyz'" in failed.value.message
    assert "there is no user 'no-such-user-xyz' on this host" in failed.value.message
    assert "services.web.run_as" in (failed.value.hint or "")
    assert not (root / ".conveyor" / "builds").exists() or not any(
        (root / ".conveyor" / "builds").glob("*.log")
    )
