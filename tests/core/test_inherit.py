"""What jobs and analysis commands inherit from the host (core/inherit.py)."""

from __future__ import annotations

import pytest

from conveyor.core.inherit import inherited, job_environment


@pytest.mark.parametrize(
    "name",
    [
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "SHELL",
        "LANG",
        "LC_ALL",
        "LC_CTYPE",
        "TZ",
        "TERM",
        "TMPDIR",
        "CI",
        "GITHUB_SHA",
        "GITHUB_REF_NAME",
        "GITHUB_RUN_ID",
        "RUNNER_OS",
        "GITLAB_CI",
        "CI_COMMIT_SHA",
        "CI_PIPELINE_ID",
    ],
)
def test_what_tools_need_and_where_the_job_runs_is_inherited(name: str) -> None:
    assert inherited(name)


@pytest.mark.parametrize(
    "name",
    [
        "GITHUB_TOKEN",
        "GITHUB_ENV",  # a file that sets variables for the workflow's later steps
        "GITHUB_OUTPUT",
        "GITHUB_PATH",
        "GITHUB_STEP_SUMMARY",
        "ACTIONS_RUNTIME_TOKEN",
        "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
        "CI_JOB_TOKEN",
        "CI_REGISTRY_PASSWORD",
        "CI_REPOSITORY_URL",  # embeds the job token
        "CI_DEPLOY_PASSWORD",
        "AWS_SECRET_ACCESS_KEY",
        "CONVEYOR_DATABASE_URL",
        "SSH_AUTH_SOCK",
        "HTTPS_PROXY",
        "VIRTUAL_ENV",
        "PYTHONPATH",
        "LD_PRELOAD",
        "path",  # exact names only
    ],
)
def test_credentials_and_takeover_channels_are_not(name: str) -> None:
    assert not inherited(name)


def test_job_environment_filters_a_host_environment() -> None:
    host = {"PATH": "/bin", "GITHUB_TOKEN": "t", "LC_ALL": "C", "SECRET": "s"}
    assert job_environment(host) == {"PATH": "/bin", "LC_ALL": "C"}
