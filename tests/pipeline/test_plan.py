"""The pure planner: expansion, validation, order and the run-or-skip table."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conveyor.config.pipeline import PipelineSpec
from conveyor.pipeline.plan import (
    NeedState,
    PipelineError,
    Run,
    RunContext,
    Skip,
    build_plan,
    decide,
)


def spec(jobs: dict[str, dict[str, object]], **extra: object) -> PipelineSpec:
    return PipelineSpec.model_validate({"jobs": jobs, **extra})


def test_matrix_expands_to_one_job_per_combination_and_needs_follow() -> None:
    plan = build_plan(
        spec(
            {
                "test": {"run": "true", "matrix": {"py": ["3.11", "3.12"], "db": ["pg", 1]}},
                "ship": {"run": "true", "needs": ["test"]},
            }
        )
    )
    names = [job.name for job in plan.jobs]
    assert names == [
        "test[py=3.11,db=pg]",
        "test[py=3.11,db=1]",
        "test[py=3.12,db=pg]",
        "test[py=3.12,db=1]",
        "ship",
    ]
    assert plan.job("ship").needs == tuple(names[:4])
    assert plan.job("test[py=3.12,db=1]").matrix == {"py": "3.12", "db": 1}


def test_unknown_need_names_the_job_and_the_need() -> None:
    with pytest.raises(PipelineError, match="job 'b' needs 'nope'") as caught:
        build_plan(spec({"a": {"run": "true"}, "b": {"run": "true", "needs": ["nope"]}}))
    assert "a, b" in (caught.value.hint or "")


def test_cycle_is_rejected_naming_its_jobs() -> None:
    jobs: dict[str, dict[str, object]] = {
        "a": {"run": "true", "needs": ["c"]},
        "b": {"run": "true", "needs": ["a"]},
        "c": {"run": "true", "needs": ["b"]},
        "free": {"run": "true"},
    }
    with pytest.raises(PipelineError, match="cycle") as caught:
        build_plan(spec(jobs))
    cycle = caught.value.message.split(": ", 1)[1].split(" -> ")
    assert cycle[0] == cycle[-1] and set(cycle) == {"a", "b", "c"}


def test_self_need_is_rejected() -> None:
    with pytest.raises(PipelineError, match="'a' needs itself"):
        build_plan(spec({"a": {"run": "true", "needs": "a"}}))


def test_invalid_condition_is_rejected_at_plan_time() -> None:
    with pytest.raises(PipelineError, match="job 'a': its if: condition is invalid"):
        build_plan(spec({"a": {"run": "true", "if": "branch = 'main'"}}))


CONTEXT = RunContext(branch="main", tag=None, changed=("src/app.py",), extra_vars={"env": "ci"})
OK, FAILED, SKIPPED = NeedState("success"), NeedState("failure"), NeedState("skipped")


@pytest.mark.parametrize(
    ("condition", "need", "stopped_by", "expected"),
    [
        (None, OK, None, Run()),
        (None, FAILED, None, Skip("need 'a' was failure")),
        (None, SKIPPED, None, Skip("need 'a' was skipped")),
        (None, OK, "x", Skip("fail-fast: 'x' failed")),
        ("branch == 'main'", OK, None, Run()),
        ("branch == 'dev'", OK, None, Skip("if: branch == 'dev' is false")),
        ("branch == 'main'", FAILED, None, Skip("need 'a' was failure")),
        ("always()", FAILED, None, Run()),
        ("always()", SKIPPED, "x", Run()),
        ("failure()", FAILED, None, Run()),
        ("failure()", NeedState("cancelled"), None, Run()),
        ("failure()", OK, None, Skip("if: failure() is false")),
        ("success() and tag == null", OK, None, Run()),
        ("needs.a.result == 'failure' || always() && false", FAILED, None, Run()),
        ("needs.a.outputs.v == '2'", NeedState("success", {"v": "2"}), None, Run()),
        ("vars.env == 'ci' and vars.python == '3.11'", OK, None, Run()),
        ("changed('src/*.py')", OK, None, Run()),
        (
            "changed('docs/**', 'README*')",
            OK,
            None,
            Skip("if: changed('docs/**', 'README*') is false"),
        ),
    ],
)
def test_decide(
    condition: str | None, need: NeedState, stopped_by: str | None, expected: object
) -> None:
    job: dict[str, object] = {"run": "true", "needs": ["a"]}
    if condition is not None:
        job["if"] = condition
    plan = build_plan(spec({"a": {"run": "true"}, "b": job}, vars={"python": "3.11"}))
    assert decide(plan.job("b"), plan, CONTEXT, {"a": need}, stopped_by) == expected


def test_unknown_changes_count_as_changed() -> None:
    plan = build_plan(spec({"a": {"run": "true", "if": "changed('docs/**')"}}))
    assert decide(plan.job("a"), plan, RunContext(), {}) == Run()


def test_matrix_need_is_readable_by_its_base_name() -> None:
    plan = build_plan(
        spec(
            {
                "t": {"run": "true", "matrix": {"n": [1, 2]}},
                "report": {"run": "true", "needs": ["t"], "if": "needs.t.result == 'failure'"},
            }
        )
    )
    states = {"t[n=1]": OK, "t[n=2]": NeedState("failure")}
    assert decide(plan.job("report"), plan, CONTEXT, states) == Skip("need 't[n=2]' was failure")
    plan_always = build_plan(
        spec(
            {
                "t": {"run": "true", "matrix": {"n": [1, 2]}},
                "report": {
                    "run": "true",
                    "needs": ["t"],
                    "if": "always() and needs.t.result == 'failure'",
                },
            }
        )
    )
    assert decide(plan_always.job("report"), plan_always, CONTEXT, states) == Run()


def test_condition_that_cannot_be_evaluated_is_an_error_naming_the_job() -> None:
    plan = build_plan(spec({"a": {"run": "true", "if": "vars.missing == 'x'"}}))
    with pytest.raises(PipelineError, match="job 'a': its if: condition cannot be evaluated"):
        decide(plan.job("a"), plan, CONTEXT, {})


@st.composite
def dags(draw: st.DrawFn) -> tuple[dict[str, dict[str, object]], bool]:
    """Random DAGs (edges to earlier jobs), declared in a shuffled order, maybe with a cycle."""
    count = draw(st.integers(1, 12))
    names = [f"j{i}" for i in range(count)]
    jobs: dict[str, dict[str, object]] = {}
    for index, name in enumerate(names):
        needs = draw(st.lists(st.sampled_from(names[:index]), unique=True)) if index else []
        jobs[name] = {"run": "true", "needs": needs}
    cyclic = count > 1 and draw(st.booleans())
    if cyclic:
        low = draw(st.integers(0, count - 2))
        high = draw(st.integers(low + 1, count - 1))
        # make high reachable from low, then close the loop
        jobs[names[high]]["needs"] = [*jobs[names[high]]["needs"], names[low]]  # type: ignore[misc]
        jobs[names[low]]["needs"] = [*jobs[names[low]]["needs"], names[high]]  # type: ignore[misc]
    order = draw(st.permutations(names))
    return {name: jobs[name] for name in order}, cyclic


@settings(max_examples=200, deadline=None)
@given(dags())
def test_plan_orders_every_dag_and_rejects_every_cycle(
    case: tuple[dict[str, dict[str, object]], bool],
) -> None:
    jobs, cyclic = case
    if cyclic:
        with pytest.raises(PipelineError, match="cycle"):
            build_plan(spec(jobs))
        return
    plan = build_plan(spec(jobs))
    position = {job.name: index for index, job in enumerate(plan.jobs)}
    assert sorted(position) == sorted(jobs)
    for job in plan.jobs:
        assert all(position[need] < position[job.name] for need in job.needs)


@settings(max_examples=200, deadline=None)
@given(dags(), st.data())
def test_a_job_runs_exactly_when_every_ancestor_succeeded(
    case: tuple[dict[str, dict[str, object]], bool], data: st.DataObject
) -> None:
    jobs, cyclic = case
    if cyclic:
        return
    plan = build_plan(spec(jobs))
    failing = data.draw(st.sets(st.sampled_from(sorted(jobs))))
    states: dict[str, NeedState] = {}
    for job in plan.jobs:  # what the runner does, minus the processes
        decision = decide(job, plan, RunContext(), states)
        ran = isinstance(decision, Run)
        result = ("failure" if job.name in failing else "success") if ran else "skipped"
        states[job.name] = NeedState(result)

    def ancestors(name: str) -> set[str]:
        direct = set(plan.job(name).needs)
        return direct.union(*(ancestors(n) for n in direct))

    for job in plan.jobs:
        expected_run = not (ancestors(job.name) & failing)
        assert (states[job.name].result != "skipped") == expected_run
