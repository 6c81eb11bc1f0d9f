"""The runner against real subprocesses: order, skips, fail-fast, timeouts, retries, secrets."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from conveyor.pipeline import PipelineSpec, RunContext, RunResult, run_pipeline

pytestmark = pytest.mark.integration

SPAWN_CHILD = "sleep 30 & echo $! > {pidfile}; wait"


def run(tmp_path: Path, jobs: dict[str, dict[str, object]], **options: object) -> RunResult:
    fail_fast = options.pop("fail_fast", True)
    spec = PipelineSpec.model_validate({"jobs": jobs, "fail_fast": fail_fast})
    options.setdefault("kill_grace", 0.5)
    return run_pipeline(spec, tmp_path, **options)


def alive(pid: int) -> bool:
    """Zombies count as dead: they run nothing and only wait for a parent to reap them."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def wait_dead(pid: int, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_needs_order_runs_and_outputs_reach_later_jobs(tmp_path: Path) -> None:
    result = run(
        tmp_path,
        {
            "build": {"run": "echo build >> order; echo version=1.2.3 >> $CONVEYOR_OUTPUT"},
            "test": {
                "needs": ["build"],
                "run": 'echo "test $VERSION" >> order',
                "env": {"VERSION": "{{ needs.build.outputs.version }}"},
            },
            "ship": {
                "needs": ["test", "build"],
                "if": "needs.build.outputs.version == '1.2.3'",
                "run": ["sh", "-c", "echo ship >> order"],
            },
        },
    )
    assert result.result == "success"
    assert (tmp_path / "order").read_text().split("\n") == ["build", "test 1.2.3", "ship", ""]
    assert result.job("build").outputs == {"version": "1.2.3"}
    json.dumps(result.to_dict())  # the whole result is JSON-serializable


def test_independent_jobs_run_in_parallel(tmp_path: Path) -> None:
    # Each waits for the other's marker: this only finishes if both run at once.
    wait_for = (
        "touch {me}; i=0; while [ ! -f {other} ] && [ $i -lt 200 ]; do "
        "sleep 0.02; i=$((i+1)); done; [ -f {other} ]"
    )
    result = run(
        tmp_path,
        {
            "x": {"run": wait_for.format(me="x", other="y")},
            "y": {"run": wait_for.format(me="y", other="x")},
        },
        max_parallel=2,
    )
    assert [j.result for j in result.jobs] == ["success", "success"]


def test_skips_propagate_and_always_runs(tmp_path: Path) -> None:
    result = run(
        tmp_path,
        {
            "a": {"run": "exit 3"},
            "b": {"needs": ["a"], "run": "true"},
            "c": {"needs": ["b"], "run": "true"},
            "notify": {"needs": ["c"], "if": "always()", "run": "echo notified"},
            "on_failure": {"needs": ["a"], "if": "failure()", "run": "true"},
            "other": {"run": "true"},
        },
        fail_fast=False,
    )
    results = {j.name: (j.result, j.reason) for j in result.jobs}
    assert results == {
        "a": ("failure", "exit 3"),
        "b": ("skipped", "need 'a' was failure"),
        "c": ("skipped", "need 'b' was skipped"),
        "notify": ("success", None),
        "on_failure": ("success", None),
        "other": ("success", None),
    }
    assert result.result == "failure"
    assert result.job("a").exit_code == 3


def test_conditions_see_branch_and_tag(tmp_path: Path) -> None:
    jobs: dict[str, dict[str, object]] = {
        "release": {"run": "true", "if": "tag != null and branch == 'main'"},
        "dev": {"run": "true", "if": "branch == 'dev'"},
    }
    result = run(tmp_path, jobs, context=RunContext(branch="main", tag="v1"))
    assert [j.result for j in result.jobs] == ["success", "skipped"]


def test_fail_fast_kills_the_whole_process_group_and_skips_the_rest(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    result = run(
        tmp_path,
        {
            "slow": {"run": SPAWN_CHILD.format(pidfile=pidfile)},
            "bad": {"run": f"while [ ! -s {pidfile} ]; do sleep 0.02; done; echo broken; exit 1"},
            "later": {"needs": ["bad"], "run": "true"},
            "cleanup": {"needs": ["slow"], "if": "always()", "run": "echo cleaned"},
        },
        max_parallel=2,
    )
    child = int(pidfile.read_text())
    assert wait_dead(child), "the sleeping child of a cancelled job survived"
    jobs = {j.name: j for j in result.jobs}
    assert jobs["slow"].result == "cancelled"
    assert jobs["slow"].reason == "stopped by fail-fast"
    assert jobs["bad"].result == "failure" and "broken" in jobs["bad"].log
    assert jobs["later"].result == "skipped"
    assert jobs["cleanup"].result == "success"
    assert result.result == "failure"
    assert result.duration < 20  # did not wait for `sleep 30`


def test_fail_fast_skips_jobs_that_have_not_started(tmp_path: Path) -> None:
    result = run(
        tmp_path,
        {"bad": {"run": "exit 1"}, "next": {"run": "touch ran"}},
        max_parallel=1,
    )
    assert result.job("next").result == "skipped"
    assert result.job("next").reason == "fail-fast: 'bad' failed"
    assert not (tmp_path / "ran").exists()


def test_timeout_kills_the_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    result = run(
        tmp_path,
        {"hang": {"run": SPAWN_CHILD.format(pidfile=pidfile), "timeout": 0.5, "retries": 2}},
    )
    job = result.job("hang")
    assert job.result == "failure"
    assert "timed out after 0.5s" in (job.reason or "")
    assert len(job.attempts) == 1  # a timeout is not an infrastructure failure
    assert wait_dead(int(pidfile.read_text()))


def test_background_children_do_not_outlive_a_successful_job(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    result = run(tmp_path, {"leaky": {"run": f"sleep 30 & echo $! > {pidfile}"}})
    assert result.job("leaky").result == "success"
    assert wait_dead(int(pidfile.read_text()))


def test_retries_infrastructure_failures_only(tmp_path: Path) -> None:
    flaky = 'n=$(cat count 2>/dev/null || echo 0); echo $((n+1)) > count; [ "$n" -ge 1 ] || exit 75'
    result = run(
        tmp_path,
        {
            "flaky": {"run": flaky, "retries": 2},
            "broken": {"run": "exit 1", "retries": 2},
            "killed": {"run": "kill -9 $$", "retries": 1},
        },
        fail_fast=False,
    )
    flaky_job = result.job("flaky")
    assert flaky_job.result == "success"
    assert [a.outcome for a in flaky_job.attempts] == ["infrastructure", "success"]
    assert flaky_job.attempts[0].reason == "exit 75 (EX_TEMPFAIL)"
    assert "retrying after exit 75" in flaky_job.log
    broken = result.job("broken")
    assert [a.outcome for a in broken.attempts] == ["failure"]
    killed = result.job("killed")
    assert killed.result == "failure"
    assert [(a.outcome, a.signal) for a in killed.attempts] == [("infrastructure", 9)] * 2
    assert killed.reason == "killed by signal SIGKILL"


def test_matrix_jobs_get_their_values(tmp_path: Path) -> None:
    result = run(
        tmp_path,
        {
            "t": {
                "run": "echo $CONVEYOR_MATRIX_PY-$CONVEYOR_MATRIX_DB",
                "matrix": {"py": [1, 2], "db": ["x"]},
            }
        },
    )
    assert {j.name: j.log for j in result.jobs} == {"t[py=1,db=x]": "1-x", "t[py=2,db=x]": "2-x"}


def test_secrets_are_masked_in_logs_outputs_and_reports(tmp_path: Path) -> None:
    secret = "s3cr3t-Value-42"
    (tmp_path / "key").write_text("file-secret-99\n")
    report = tmp_path / "junit.xml"
    script = (
        'echo "token is $TOKEN"; echo "key is $KEY" >&2; '
        'echo "leak=$TOKEN" >> $CONVEYOR_OUTPUT; '
        f'printf \'<testsuite><testcase name="t"><failure message="got %s"/></testcase>'
        f'</testsuite>\' "$TOKEN" > {report}; exit 1'
    )
    lines: list[tuple[str, str]] = []
    result = run(
        tmp_path,
        {
            "deploy": {
                "run": script,
                "secrets": {
                    "TOKEN": {"env": "PIPE_TEST_TOKEN"},
                    "KEY": {"file": str(tmp_path / "key")},
                },
                "reports": {"junit": ["junit.xml"]},
            }
        },
        environ={"PATH": "/usr/bin:/bin", "PIPE_TEST_TOKEN": secret},
        on_log=lambda job, line: lines.append((job, line)),
    )
    job = result.job("deploy")
    assert job.result == "failure"
    everything = json.dumps(result.to_dict()) + repr(lines)
    assert secret not in everything and "file-secret-99" not in everything
    assert "token is ***" in job.log and "key is ***" in job.log
    assert job.outputs == {"leak": "***"}
    assert job.reports[0].failed[0].message == "got ***"
    assert ("deploy", "token is ***") in lines


def test_missing_secret_fails_the_job_with_a_hint(tmp_path: Path) -> None:
    result = run(
        tmp_path,
        {"a": {"run": "true", "secrets": {"T": {"env": "PIPE_TEST_UNSET"}}}},
        environ={"PATH": "/usr/bin:/bin"},
    )
    assert result.job("a").result == "failure"
    assert "$PIPE_TEST_UNSET, which is not set" in (result.job("a").reason or "")


def test_junit_report_becomes_evidence(tmp_path: Path) -> None:
    xml = (
        "<testsuites><testsuite name='s'>"
        "<testcase classname='m' name='ok'/>"
        "<testcase classname='m' name='bad'>"
        "<failure message='assert 1 == 2'>trace</failure></testcase>"
        "<testcase classname='m' name='boom'><error>RuntimeError: x</error></testcase>"
        "<testcase classname='m' name='later'><skipped/></testcase>"
        "</testsuite></testsuites>"
    )
    (tmp_path / "reports").mkdir()
    result = run(
        tmp_path,
        {
            "unit": {
                "run": f'echo "{xml}" > reports/junit.xml',
                "reports": {"junit": ["reports/*.xml", "missing.xml"]},
            }
        },
    )
    found, missing = result.job("unit").reports
    assert (found.path, found.tests, found.failures, found.errors, found.skipped) == (
        "reports/junit.xml",
        4,
        1,
        1,
        1,
    )
    assert [(c.name, c.kind, c.message) for c in found.failed] == [
        ("m.bad", "failure", "assert 1 == 2"),
        ("m.boom", "error", "RuntimeError: x"),
    ]
    assert not found.passed
    assert missing.error == "report file not found"


def test_a_command_that_cannot_start_is_a_failure(tmp_path: Path) -> None:
    result = run(tmp_path, {"a": {"run": ["/nonexistent/tool", "x"]}})
    assert result.job("a").result == "failure"
    assert "cannot start '/nonexistent/tool'" in (result.job("a").reason or "")


def test_max_parallel_bounds_concurrency(tmp_path: Path) -> None:
    # mkdir is atomic: a second job inside the critical section at once fails.
    critical = "mkdir inside || exit 9; sleep 0.2; rmdir inside"
    jobs: dict[str, dict[str, object]] = {f"j{i}": {"run": critical} for i in range(3)}
    result = run(tmp_path, jobs, max_parallel=1)
    assert [j.result for j in result.jobs] == ["success"] * 3
    unbounded = run(tmp_path, {**jobs, "gate": {"run": "true"}}, max_parallel=4, fail_fast=False)
    # all start in the same scheduler pass, so the section above can detect an overlap
    assert any(j.exit_code == 9 for j in unbounded.jobs)


def test_conditions_and_templates_that_cannot_be_evaluated_fail_their_job(tmp_path: Path) -> None:
    result = run(
        tmp_path,
        {
            "a": {"run": "true", "if": "vars.nope == 'x'"},
            "b": {"run": "true", "env": {"X": "{{ vars.nope }}"}},
        },
        fail_fast=False,
    )
    a, b = result.jobs
    assert a.result == "failure" and "job 'a': its if: condition cannot be evaluated" in (
        a.reason or ""
    )
    assert b.result == "failure" and "no field 'nope'" in (b.reason or "")


def test_long_logs_keep_their_tail(tmp_path: Path) -> None:
    from conveyor.pipeline.runner import MAX_LOG_LINES

    result = run(tmp_path, {"chatty": {"run": f"seq 1 {MAX_LOG_LINES + 5}"}})
    lines = result.job("chatty").log.split("\n")
    assert lines[0] == "conveyor: 5 earlier lines dropped"
    assert lines[1] == "6" and lines[-1] == str(MAX_LOG_LINES + 5)


def test_cobertura_coverage_becomes_evidence(tmp_path: Path) -> None:
    xml = '<coverage line-rate="0.8125" lines-covered="13" lines-valid="16"></coverage>'
    result = run(
        tmp_path,
        {
            "cov": {
                "run": f"echo '{xml}' > coverage.xml; echo '<x/>' > bad.xml",
                "reports": {"coverage": ["coverage.xml", "bad.xml"]},
            }
        },
    )
    good, bad = result.job("cov").coverage
    assert (good.path, good.percent, good.lines_covered, good.lines_valid) == (
        "coverage.xml",
        81.25,
        13,
        16,
    )
    assert bad.error is not None and "not a Cobertura report" in bad.error


def test_a_child_that_escapes_the_group_cannot_hold_the_job_open(tmp_path: Path) -> None:
    pidfile = tmp_path / "escaped.pid"
    escape = (
        f"setsid sh -c 'echo $$ > {pidfile}; exec sleep 30' & "
        f"while [ ! -s {pidfile} ]; do sleep 0.01; done; echo done"
    )
    result = run(tmp_path, {"a": {"run": escape}})
    escaped = int(pidfile.read_text())
    try:
        job = result.job("a")
        assert job.result == "success"
        assert job.log.split("\n") == [
            "done",
            "conveyor: output still open after exit; stopped reading",
        ]
        assert result.duration < 20
    finally:
        os.kill(escaped, signal.SIGKILL)
