"""Export and job selection are pure functions of the spec; exports are pinned, least-privilege."""

from __future__ import annotations

import pytest
from ruamel.yaml import YAML

from conveyor import __version__
from conveyor.config.pipeline import PipelineSpec
from conveyor.pipeline.export import export, github_id
from conveyor.pipeline.plan import PipelineError
from conveyor.pipeline.select import only_job, until_job

SPEC = PipelineSpec.model_validate(
    {
        "vars": {"python": "3.12"},
        "jobs": {
            "unit.tests": {"run": "x", "matrix": {"py": ["3.11", "3.12"]}},
            "9lint": {"run": "x"},
            "build": {"run": "x", "needs": ["unit.tests[py=3.11]", "9lint"]},
            "docs": {"run": "x"},
        },
    }
)


@pytest.mark.parametrize(
    ("name", "expected"), [("build", "build"), ("unit.tests", "unit_tests"), ("9lint", "_9lint")]
)
def test_github_ids(name: str, expected: str) -> None:
    assert github_id(name) == expected


def test_variant_needs_become_job_needs_and_python_comes_from_vars() -> None:
    github = YAML(typ="safe").load(export(SPEC, "github-actions", directory="svc/a"))
    build = github["jobs"]["build"]
    assert build["needs"] == ["unit_tests", "_9lint"]
    assert build["steps"][1]["with"]["python-version"] == "3.12"
    assert build["steps"][-1]["run"] == "conveyor -C svc/a run --job build"
    gitlab = YAML(typ="safe").load(export(SPEC, "gitlab-ci"))
    assert gitlab["build"]["needs"] == ["unit.tests", "9lint"]
    assert gitlab["docs"]["needs"] == []


def test_until_keeps_ancestors_only_and_job_drops_needs() -> None:
    assert list(until_job(SPEC, "build").jobs) == ["unit.tests", "9lint", "build"]
    alone = only_job(SPEC, "build")
    assert list(alone.jobs) == ["build"] and alone.jobs["build"].needs == []
    with pytest.raises(PipelineError, match="no such job"):
        until_job(SPEC, "deploy")


def test_a_deploy_job_runs_until_itself_in_ci_because_the_artifact_is_local() -> None:
    spec = PipelineSpec.model_validate(
        {
            "jobs": {
                "package": {"build": "catalog"},
                "staging": {"needs": ["package"], "deploy": {"env": "staging"}},
                "pinned": {"deploy": {"env": "dev", "service": "catalog", "artifact": "x"}},
            }
        }
    )
    github = YAML(typ="safe").load(export(spec, "github-actions"))
    assert github["jobs"]["package"]["steps"][-1]["run"] == "conveyor run --job package"
    assert github["jobs"]["staging"]["steps"][-1]["run"] == "conveyor run --until staging"
    assert github["jobs"]["pinned"]["steps"][-1]["run"] == "conveyor run --job pinned"
    gitlab = YAML(typ="safe").load(export(spec, "gitlab-ci"))
    assert gitlab["staging"]["script"][-1] == "conveyor run --until staging"


def test_the_install_is_pinned_to_this_version_unless_overridden() -> None:
    github = YAML(typ="safe").load(export(SPEC, "github-actions"))
    gitlab = YAML(typ="safe").load(export(SPEC, "gitlab-ci"))
    pinned = f"pip install conveyor=={__version__}"
    for job in github["jobs"].values():
        assert {"run": pinned} in job["steps"]
    for name in SPEC.jobs:
        assert gitlab[name]["script"][0] == pinned
    custom = "pip install 'conveyor @ git+https://example.invalid/conveyor@0123abcd'"
    overridden = YAML(typ="safe").load(export(SPEC, "github-actions", install=custom))
    assert {"run": custom} in overridden["jobs"]["build"]["steps"]


def test_github_workflows_get_a_read_only_token_that_jobs_cannot_pick_up() -> None:
    github = YAML(typ="safe").load(export(SPEC, "github-actions"))
    assert github["permissions"] == {"contents": "read"}
    for job in github["jobs"].values():
        assert "permissions" not in job  # no job needs more than the workflow grants
        checkout = job["steps"][0]
        assert checkout["uses"].startswith("actions/checkout@")
        assert checkout["with"] == {"fetch-depth": 0, "persist-credentials": False}
