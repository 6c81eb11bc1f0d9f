"""`build:` and `deploy:` jobs: how a deploy finds what it releases, and how the runner calls out.

Planning is pure, so every way a deploy can (not) find its artifact is stated here. The runner
tests use a recording ``JobActions``: the seam the CLI fills with the real project (the real
build, server and rollout are exercised end to end in tests/cli/test_pipeline_promotion.py).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from conveyor.pipeline import PipelineSpec, run_pipeline
from conveyor.pipeline.plan import PipelineError, PlannedJob, build_plan
from conveyor.pipeline.runner import ActionOutcome, JobResult
from conveyor.pipeline.select import only_job, until_job


def spec(jobs: dict[str, Any], **extra: Any) -> PipelineSpec:
    return PipelineSpec.model_validate({"jobs": jobs, **extra})


def test_build_shorthand_and_deploy_find_the_nearest_build_of_their_service() -> None:
    plan = build_plan(
        spec(
            {
                "test": {"run": "true"},
                "package": {"needs": ["test"], "build": "catalog"},
                "staging": {"needs": ["package"], "deploy": {"env": "staging"}},
                "production": {"needs": ["staging"], "deploy": {"env": "production"}},
            }
        )
    )
    assert plan.job("package").service == "catalog"
    assert (plan.job("staging").service, plan.job("staging").build_job) == ("catalog", "package")
    # Transitive: production needs staging, which needs package.
    assert (plan.job("production").service, plan.job("production").build_job) == (
        "catalog",
        "package",
    )


def test_a_deploy_picks_its_service_among_several_builds() -> None:
    jobs = {
        "a": {"build": {"service": "catalog"}},
        "b": {"build": "pricing"},
        "ship": {"needs": ["a", "b"], "deploy": {"env": "staging", "service": "pricing"}},
    }
    assert build_plan(spec(jobs)).job("ship").build_job == "b"
    jobs["ship"] = {"needs": ["a", "b"], "deploy": {"env": "staging"}}
    with pytest.raises(PipelineError, match="several services") as error:
        build_plan(spec(jobs))
    assert error.value.hint is not None and "jobs.ship.deploy.service" in error.value.hint


@pytest.mark.parametrize(
    ("jobs", "message"),
    [
        ({"ship": {"deploy": {"env": "staging"}}}, "nothing to deploy"),
        (
            {"b": {"build": "x"}, "ship": {"needs": ["b"], "deploy": {"env": "s", "service": "y"}}},
            "builds service 'y'",
        ),
        ({"ship": {"deploy": {"env": "s", "artifact": "sha256:1"}}}, "which service"),
    ],
)
def test_a_deploy_that_cannot_know_what_it_releases_is_refused_at_plan_time(
    jobs: dict[str, Any], message: str
) -> None:
    with pytest.raises(PipelineError, match=message):
        build_plan(spec(jobs))


@pytest.mark.parametrize(
    ("job", "message"),
    [
        ({"run": "true", "build": "x"}, "this one has run and build"),
        ({"deploy": {"env": "s"}, "gate": "secret-scan"}, "this one has gate and deploy"),
        ({"build": "x", "matrix": {"a": [1, 2]}}, "a build job has no matrix"),
        ({"deploy": {"env": "s", "timeout": "soon"}}, "expected a duration"),
        ({"deploy": {"env": "s", "enviroment": "x"}}, "enviroment"),
    ],
)
def test_job_kinds_are_exclusive_and_validated(job: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        spec({"j": job})


def test_a_deploy_job_alone_in_ci_mode_says_how_to_give_it_an_artifact() -> None:
    pipeline = spec({"b": {"build": "x"}, "ship": {"needs": ["b"], "deploy": {"env": "s"}}})
    with pytest.raises(PipelineError, match="cannot see the digest") as error:
        only_job(pipeline, "ship")
    assert error.value.hint is not None and "--until ship" in error.value.hint
    assert list(until_job(pipeline, "ship").jobs) == ["b", "ship"]
    templated = spec({"ship": {"deploy": {"env": "s", "service": "x", "artifact": "{{ vars.a }}"}}})
    assert list(only_job(templated, "ship").jobs) == ["ship"]


class Recorder:
    """Records what the runner hands to the actions; builds answer a fixed digest."""

    def __init__(self, deploy_result: str = "success") -> None:
        self.calls: list[tuple[str, str, str, list[tuple[str, str]]]] = []
        self.deploy_result = deploy_result

    def build(
        self, job: PlannedJob, finished: Sequence[JobResult], log: Callable[[str], None]
    ) -> ActionOutcome:
        log(f"building {job.service}")
        self.calls.append(("build", job.name, "", [(j.name, j.result) for j in finished]))
        return ActionOutcome("success", outputs={"digest": "sha256:" + "ab" * 32})

    def deploy(
        self,
        job: PlannedJob,
        artifact: str,
        finished: Sequence[JobResult],
        log: Callable[[str], None],
        cancelled: threading.Event,
    ) -> ActionOutcome:
        self.calls.append(("deploy", job.name, artifact, [(j.name, j.result) for j in finished]))
        if self.deploy_result != "success":
            return ActionOutcome("failure", "catalog/staging r2 rolled back: error rate 40%")
        return ActionOutcome("success", outputs={"release": "catalog/staging r2"})


PIPELINE = {
    "test": {"run": "echo tested"},
    "package": {"needs": ["test"], "build": "catalog"},
    "staging": {"needs": ["package"], "deploy": {"env": "staging"}},
    "smoke": {"needs": ["staging"], "run": "echo smoke"},
}


def run(tmp_path: Path, jobs: dict[str, Any], actions: Any) -> Any:
    return run_pipeline(spec(jobs), tmp_path, environ={"PATH": os.environ["PATH"]}, actions=actions)


def test_the_runner_hands_the_build_digest_and_the_run_so_far_to_the_deploy(
    tmp_path: Path,
) -> None:
    recorder = Recorder()
    result = run(tmp_path, PIPELINE, recorder)
    assert result.result == "success"
    assert recorder.calls == [
        ("build", "package", "", [("test", "success")]),
        ("deploy", "staging", "sha256:" + "ab" * 32, [("test", "success"), ("package", "success")]),
    ]
    assert result.job("package").outputs == {"digest": "sha256:" + "ab" * 32}
    assert "building catalog" in result.job("package").log
    assert result.job("staging").outputs == {"release": "catalog/staging r2"}


def test_a_rolled_back_deploy_fails_the_run_and_skips_what_follows(tmp_path: Path) -> None:
    result = run(tmp_path, PIPELINE, Recorder(deploy_result="failure"))
    assert result.result == "failure"
    assert result.job("staging").result == "failure"
    assert result.job("staging").reason == "catalog/staging r2 rolled back: error rate 40%"
    assert result.job("smoke").result == "skipped"


def test_an_artifact_template_reads_the_build_output(tmp_path: Path) -> None:
    recorder = Recorder()
    jobs = {
        "package": {"build": "catalog"},
        "ship": {
            "needs": ["package"],
            "deploy": {"env": "s", "artifact": "{{ needs.package.outputs.digest }}"},
        },
    }
    assert run(tmp_path, jobs, recorder).result == "success"
    assert recorder.calls[-1][2] == "sha256:" + "ab" * 32


def test_without_a_project_build_and_deploy_jobs_fail_saying_so(tmp_path: Path) -> None:
    result = run(tmp_path, {"package": {"build": "catalog"}}, None)
    assert result.job("package").result == "failure"
    assert "needs a Conveyor project" in (result.job("package").reason or "")


class Waiting(Recorder):
    """A deploy that follows its rollout until the run tells it to stop."""

    def __init__(self) -> None:
        super().__init__()
        self.stopped = threading.Event()

    def deploy(
        self,
        job: PlannedJob,
        artifact: str,
        finished: Sequence[JobResult],
        log: Callable[[str], None],
        cancelled: threading.Event,
    ) -> ActionOutcome:
        if cancelled.wait(30):
            self.stopped.set()
        return ActionOutcome("failure", "stopped following")


def test_fail_fast_tells_a_deploy_in_progress_to_stop_following(tmp_path: Path) -> None:
    actions = Waiting()
    jobs = {
        "package": {"build": "catalog"},
        "staging": {"needs": ["package"], "deploy": {"env": "staging"}},
        "slow-check": {"needs": ["package"], "run": "sleep 0.5; exit 3"},
    }
    result = run(tmp_path, jobs, actions)
    assert actions.stopped.is_set()
    assert result.job("slow-check").result == "failure"
    assert result.job("staging").result == "cancelled"
    assert result.job("staging").reason == "stopped by fail-fast"
