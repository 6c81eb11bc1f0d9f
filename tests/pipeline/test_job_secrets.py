"""Secrets in pipelines: only the job that declared one sees it, and no form of it is kept.

Real jobs print the secret in every form a tool would (``tests/secret_forms.py``); the run
result, the live log lines and the run record written under ``.conveyor/runs/`` hold none
of them. A job that did not declare a secret does not see it, nor anything else of the
environment of whoever ran the pipeline beyond the allow-list (``core.inherit``).
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from conveyor.cli.runs import new_run_id, store_run
from conveyor.layout import Layout
from conveyor.pipeline import PipelineSpec, RunContext, RunResult, run_pipeline

from ..secret_forms import SECRET, VARIABLE, files_holding, needles, printer_argv

pytestmark = pytest.mark.integration

HOST = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": "/home/ci",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "CI": "true",
    "GITHUB_SHA": "0123abcd",
    "GITHUB_REF_NAME": "main",
    "CI_COMMIT_SHA": "0123abcd",
    # what must not reach a job that did not ask for it
    VARIABLE: SECRET,
    "GITHUB_TOKEN": "ghs_not-for-jobs",
    "GITHUB_ENV": "/tmp/github-env-file",
    "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "oidc-not-for-jobs",
    "CI_JOB_TOKEN": "glcbt-not-for-jobs",
    "AWS_SECRET_ACCESS_KEY": "aws-not-for-jobs",
    "CONVEYOR_DATABASE_URL": "postgresql://u:pw@db/x",
    "PYTHONPATH": "/work/src",
    "LD_PRELOAD": "/tmp/evil.so",
}


def run(tmp_path: Path, jobs: dict[str, dict[str, object]], **options: object) -> RunResult:
    spec = PipelineSpec.model_validate({"jobs": jobs})
    options.setdefault("kill_grace", 0.5)
    options.setdefault("environ", HOST)
    return run_pipeline(spec, tmp_path, **options)


def env_of(result: RunResult, job: str) -> dict[str, str]:
    lines = result.job(job).log.splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


def test_a_job_sees_the_allow_list_and_what_it_declared(tmp_path: Path) -> None:
    result = run(
        tmp_path,
        {
            "plain": {"run": "env", "env": {"STAGE": "test"}},
            "declared": {"run": "env", "secrets": {"DB": {"env": VARIABLE}}},
        },
    )
    plain = env_of(result, "plain")
    assert plain == {
        "PATH": HOST["PATH"],
        "HOME": "/home/ci",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "CI": "true",
        "GITHUB_SHA": "0123abcd",
        "GITHUB_REF_NAME": "main",
        "CI_COMMIT_SHA": "0123abcd",
        "CONVEYOR_JOB": "plain",
        "CONVEYOR_OUTPUT": plain["CONVEYOR_OUTPUT"],
        "STAGE": "test",
        **{k: v for k, v in plain.items() if k in ("PWD", "SHLVL", "_")},  # the shell's own
    }
    declared = env_of(result, "declared")
    assert declared["DB"] == "***"  # it has it (and its log shows it masked)
    assert VARIABLE not in declared and "GITHUB_TOKEN" not in declared


def test_no_form_of_a_secret_survives_a_run(tmp_path: Path) -> None:
    lines: list[str] = []
    printer = shlex.join(printer_argv("DB"))
    report = tmp_path / "junit.xml"
    result = run(
        tmp_path,
        {
            "uses-secret": {
                "run": f'{printer} && echo "out=$DB" >> $CONVEYOR_OUTPUT && printf '
                f'\'<testsuite><testcase name="t"><failure message="%s"/></testcase>'
                f'</testsuite>\' "$(printf %s "$DB" | base64)" > {report}; exit 1',
                "secrets": {"DB": {"env": VARIABLE}},
                "reports": {"junit": ["junit.xml"]},
            },
        },
        on_log=lambda job, line: lines.append(line),
    )
    job = result.job("uses-secret")
    assert job.result == "failure"
    assert "done printing" in job.log and job.log.count("printed: ") == 15
    assert job.outputs == {"out": "***"}
    assert job.reports[0].failed[0].message == "***"
    everything = (json.dumps(result.to_dict(), ensure_ascii=False) + "\n".join(lines)).encode()
    leaked = [name for name, needle in needles().items() if needle in everything]
    assert leaked == []
    record = store_run(Layout(tmp_path), result, RunContext(branch="main"), new_run_id())
    assert record.is_relative_to(tmp_path / ".conveyor")
    report.unlink()  # the job's own file, in the workspace: not something Conveyor wrote
    assert files_holding(tmp_path / ".conveyor") == {}
