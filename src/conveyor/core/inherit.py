"""What a pipeline job or an analysis command inherits from the process that runs it.

``conveyor run`` (on a laptop or a CI runner) and ``conveyor server`` hold credentials: a CI
token, cloud keys, the database URL, the secrets instances read. A job is code from the
repository, so it must see only what it declared (``env:``, ``secrets:``) plus what any tool
needs to work at all — the GitHub Actions and Kubernetes model (nothing a step did not
map), not the shell model (everything). The allow-list is the second part:

- ``PATH``, ``HOME``, ``USER``, ``LOGNAME``, ``SHELL``: tools must be found and find their
  caches and configuration;
- ``LANG``, ``LANGUAGE``, ``LC_*``, ``TZ``, ``TERM``, ``NO_COLOR``, ``TMPDIR``: text, time and
  scratch space behave as on the host;
- ``CI`` and the CI host's *descriptive* variables (commit, branch, run id, URLs), so a job
  knows where it runs: GitHub Actions' and GitLab CI's documented defaults, by exact name.

Left out on purpose, although a CI host sets them: ``GITHUB_TOKEN``, ``ACTIONS_*`` (runtime
and OIDC request tokens), ``CI_JOB_TOKEN``, ``CI_REGISTRY_PASSWORD``, ``CI_REPOSITORY_URL``
(it embeds the job token), and GitHub's ``GITHUB_ENV``/``GITHUB_OUTPUT``/``GITHUB_PATH``/
``GITHUB_STEP_SUMMARY`` (files a job could write to change the workflow's later steps,
``conveyor`` itself included). Also ``SSH_AUTH_SOCK`` (the user's keys), proxy variables
(their URLs often carry credentials) and ``VIRTUAL_ENV``/``PYTHONPATH`` (a job must not
depend on how Conveyor was started). A job that needs one declares it: ``secrets: {NAME:
{env: NAME}}`` passes it through, masked.
"""

from __future__ import annotations

from collections.abc import Mapping

BASE = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "SHELL",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TERM",
        "NO_COLOR",
        "TMPDIR",
    }
)
BASE_PREFIXES = ("LC_",)

CI_HOST = frozenset(
    {
        "CI",
        # GitHub Actions: the documented default variables, minus tokens and command files
        "GITHUB_ACTIONS",
        "GITHUB_ACTOR",
        "GITHUB_ACTOR_ID",
        "GITHUB_API_URL",
        "GITHUB_BASE_REF",
        "GITHUB_EVENT_NAME",
        "GITHUB_GRAPHQL_URL",
        "GITHUB_HEAD_REF",
        "GITHUB_JOB",
        "GITHUB_REF",
        "GITHUB_REF_NAME",
        "GITHUB_REF_PROTECTED",
        "GITHUB_REF_TYPE",
        "GITHUB_REPOSITORY",
        "GITHUB_REPOSITORY_ID",
        "GITHUB_REPOSITORY_OWNER",
        "GITHUB_REPOSITORY_OWNER_ID",
        "GITHUB_RUN_ATTEMPT",
        "GITHUB_RUN_ID",
        "GITHUB_RUN_NUMBER",
        "GITHUB_SERVER_URL",
        "GITHUB_SHA",
        "GITHUB_TRIGGERING_ACTOR",
        "GITHUB_WORKFLOW",
        "GITHUB_WORKFLOW_REF",
        "GITHUB_WORKFLOW_SHA",
        "GITHUB_WORKSPACE",
        "RUNNER_ARCH",
        "RUNNER_NAME",
        "RUNNER_OS",
        "RUNNER_TEMP",
        "RUNNER_TOOL_CACHE",
        # GitLab CI: the descriptive predefined variables, minus tokens and passwords
        "GITLAB_CI",
        "CI_COMMIT_BEFORE_SHA",
        "CI_COMMIT_BRANCH",
        "CI_COMMIT_REF_NAME",
        "CI_COMMIT_REF_SLUG",
        "CI_COMMIT_SHA",
        "CI_COMMIT_SHORT_SHA",
        "CI_COMMIT_TAG",
        "CI_DEFAULT_BRANCH",
        "CI_JOB_ID",
        "CI_JOB_NAME",
        "CI_JOB_STAGE",
        "CI_JOB_URL",
        "CI_MERGE_REQUEST_IID",
        "CI_MERGE_REQUEST_SOURCE_BRANCH_NAME",
        "CI_MERGE_REQUEST_TARGET_BRANCH_NAME",
        "CI_PIPELINE_ID",
        "CI_PIPELINE_IID",
        "CI_PIPELINE_SOURCE",
        "CI_PIPELINE_URL",
        "CI_PROJECT_DIR",
        "CI_PROJECT_ID",
        "CI_PROJECT_NAME",
        "CI_PROJECT_NAMESPACE",
        "CI_PROJECT_PATH",
        "CI_PROJECT_PATH_SLUG",
        "CI_PROJECT_URL",
        "CI_SERVER_HOST",
        "CI_SERVER_URL",
    }
)


def inherited(name: str) -> bool:
    """Whether a job or an analysis command may see the host's variable ``name``."""
    return name in BASE or name in CI_HOST or name.startswith(BASE_PREFIXES)


def job_environment(host: Mapping[str, str]) -> dict[str, str]:
    """The part of ``host`` a job starts with, before what it declares is added."""
    return {name: value for name, value in host.items() if inherited(name)}
