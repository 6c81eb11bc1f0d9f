"""Pipeline jobs with ``run_as``: as that user, in a copy of the project it owns.

Real jobs, a real unprivileged user (skipped without root and that user, saying how). A job
must not read ``.conveyor/`` (the state, the admin token, keys), must be able to write its
workspace, and must not be able to make the runner — which reads outputs, caches and
reports as root — read a file for it.
"""

from __future__ import annotations

import os
import stat
import tarfile
from pathlib import Path

import pytest

from conveyor.artifacts.workspace import job_workspace
from conveyor.layout import Layout
from conveyor.pipeline import PipelineSpec, RunResult, run_pipeline
from tests.cli.support import cli_env, conveyor
from tests.run_as_support import (
    PROBE,
    RUN_AS,
    SYSTEM_PYTHON,
    TOKEN,
    assert_isolated,
    needs_run_as,
    probe_results,
    project,
    the_user,
)

pytestmark = pytest.mark.integration
__all__ = ["project"]  # the fixture, imported to be used

HOST = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/root", "LANG": "C.UTF-8"}


def run_as_user(
    layout: Layout, jobs: dict[str, dict[str, object]], cache: Path | None = None
) -> tuple[RunResult, list[str]]:
    """Run ``jobs`` as the user in a fresh job workspace; what the workspace held after."""
    spec = PipelineSpec.model_validate({"jobs": jobs})
    with job_workspace(layout.directory(layout.workspaces), layout.root, the_user()) as place:
        assert place.run_as is not None
        result = run_pipeline(
            spec, place.path, run_as=place.run_as, environ=HOST, kill_grace=0.5, cache_dir=cache
        )
        left = sorted(p.name for p in place.path.iterdir())
    return result, left


@needs_run_as
def test_a_job_runs_as_its_user_in_a_copy_it_owns(project: Layout) -> None:
    user = the_user()
    (project.root / "probe.py").write_text(PROBE)
    (project.root / "source.txt").write_text("from the project\n")
    assert SYSTEM_PYTHON is not None
    result, left = run_as_user(
        project,
        {
            "probe": {
                "run": [SYSTEM_PYTHON, "probe.py"],
                "env": {"PROBE_STATE": str(project.state)},
            },
            "work": {
                "run": "cat source.txt && echo made > made.txt && echo uid=$(id -u) >> "
                '"$CONVEYOR_OUTPUT" && echo "home=$HOME" >> "$CONVEYOR_OUTPUT" && '
                'touch "$HOME/cache-ok" && (cat $PROBE_TOKEN || echo token-denied)',
                "env": {"PROBE_TOKEN": str(project.admin_token)},
            },
        },
    )
    found = probe_results(result.job("probe").log)
    assert found is not None, result.job("probe").log
    assert_isolated(found, user)
    assert found["write_here"] == "ok"  # its workspace is its own
    work = result.job("work")
    assert work.result == "success", work.log
    assert "Permission denied" in work.log and "token-denied" in work.log
    assert "from the project" in work.log
    assert work.outputs["uid"] == str(user.uid)
    assert work.outputs["home"].startswith(str(project.workspaces))
    assert "made.txt" in left and "probe-wrote-this" in left
    # The project itself is untouched, and the workspace is gone.
    assert not (project.root / "made.txt").exists()
    assert [p for p in project.workspaces.iterdir() if not p.name.startswith(".")] == []
    assert stat.S_IMODE(project.admin_token.stat().st_mode) == 0o600


@needs_run_as
def test_a_job_cannot_point_its_output_file_at_the_token(project: Layout) -> None:
    result, _ = run_as_user(
        project,
        {
            "swap": {
                "run": f'rm -f "$CONVEYOR_OUTPUT" && ln -s {project.admin_token} '
                '"$CONVEYOR_OUTPUT" && echo swapped'
            }
        },
    )
    job = result.job("swap")
    assert job.result == "success", job.log
    assert job.outputs == {}
    assert TOKEN not in repr(result)


@needs_run_as
def test_caches_are_the_users_to_change_and_links_are_not_followed(
    project: Layout, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    write = {
        "run": f"mkdir -p deps && echo one > deps/lib.txt && ln -s {project.state} state-link",
        "cache": {"key": "deps-1", "paths": ["deps/", "state-link/admin.token"]},
    }
    first, _ = run_as_user(project, {"fill": write}, cache)
    assert first.job("fill").result == "success", first.job("fill").log
    assert first.job("fill").cache is not None and first.job("fill").cache.saved
    for archive in cache.glob("*.tar.gz"):
        with tarfile.open(archive) as tar:
            names = tar.getnames()
            assert all("admin.token" not in name for name in names), names
            contents = b"".join(
                f.read() for m in tar.getmembers() if (f := tar.extractfile(m)) is not None
            )
        assert TOKEN.encode() not in contents
    change = {
        "run": "echo two >> deps/lib.txt && rm deps/lib.txt && mkdir deps/more",
        "cache": {"key": "deps-1", "paths": ["deps/"]},
    }
    second, _ = run_as_user(project, {"change": change}, cache)
    job = second.job("change")
    assert job.cache is not None and job.cache.hit
    assert job.result == "success", job.log  # restored by root, handed to the user


def pipeline_project(layout: Layout, run_as: str | None) -> Path:
    line = "" if run_as is None else f"  run_as: {run_as}\n"
    (layout.root / "conveyor.yaml").write_text(
        "project: svc\n"
        "services:\n  api: {build: {run: 'true', outputs: [out/]}, run: 'true', run_as: null}\n"
        "environments:\n  dev:\n"
        "pipeline:\n"
        f"{line}"
        "  jobs:\n"
        "    who: {run: 'echo uid=$(id -u); echo made > made.txt'}\n"
    )
    return layout.root


@needs_run_as
def test_conveyor_run_runs_jobs_as_pipeline_run_as(project: Layout) -> None:
    root = pipeline_project(project, RUN_AS)
    result = conveyor("run", "--json", root=root, env=cli_env())
    assert result.code == 0, result
    (job,) = result.json()["jobs"]
    assert f"uid={the_user().uid}" in job["log"]
    assert not (root / "made.txt").exists()  # written in the job's copy, not the project
    assert "runs as root" not in result.output


def test_conveyor_run_as_root_without_run_as_says_so(project: Layout) -> None:
    root = pipeline_project(project, None)
    result = conveyor("run", root=root, env=cli_env())
    assert result.code == 0, result
    said = "Conveyor runs as root and pipeline jobs run as root too" in result.stderr
    assert said is (os.geteuid() == 0)
    assert "uid=0" in result.output or (root / "made.txt").exists()


def test_a_pipeline_user_this_host_lacks_stops_the_run_before_any_job(project: Layout) -> None:
    root = pipeline_project(project, "no-such-user-xyz")
    result = conveyor("run", root=root, env=cli_env())
    assert result.code == 2, result
    assert "pipeline jobs run as 'no-such-user-xyz'" in result.output
    assert "there is no user 'no-such-user-xyz' on this host" in result.output
    assert "Traceback" not in result.output
    assert not (root / "made.txt").exists()
    assert os.path.exists(root / "conveyor.yaml")


@needs_run_as
def test_a_report_linked_out_of_the_workspace_is_not_read(project: Layout) -> None:
    xml = project.legacy_keys / "report.xml"  # a private XML file only root may read
    xml.write_text('<testsuite tests="1"><testcase name="private-case-name"/></testsuite>')
    xml.chmod(0o600)
    job = {"run": f"ln -s {xml} junit.xml", "reports": {"junit": ["junit.xml"]}}
    result, _ = run_as_user(project, {"link": job})
    (report,) = result.job("link").reports
    assert report.error == "report file not found"
    assert "private-case-name" not in repr(result)
