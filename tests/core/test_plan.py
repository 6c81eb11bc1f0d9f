"""The frozen release plan (core/plan.py) and the analysis templates it carries.

A plan is written once and read for the rest of the release's life, possibly by a later
Conveyor, so its JSON form must give back an equal plan through real JSON text, and the
values derived from it (the version, the rollout spec, the plan of a rollback) must be the
ones the rest of the system computes on its own.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.core.analysis import AnalysisTemplate, MetricSpec
from conveyor.core.model import ProbeSpec, SecretRef
from conveyor.core.plan import (
    PLAN_FORMAT,
    InstanceTemplate,
    NotifyTarget,
    ReleasePlan,
    StableRef,
)
from conveyor.core.release import config_version, template_key
from conveyor.core.retry import RetryPolicy
from conveyor.core.state import (
    AnalysisStep,
    HeaderRouteStep,
    PauseStep,
    RolloutSpec,
    SetWeightStep,
    StrategySpec,
    Triggers,
)
from conveyor.errors import TemplateArgumentError

DIGEST = "sha256:" + "ab" * 32
ERRORS = AnalysisTemplate(
    args=("canary", "stable"),
    metrics=(
        MetricSpec(
            name="error-rate",
            provider="prometheus",
            config={
                "address": "http://prometheus:9090",
                "query": 'sum(rate(errors{version="{{args.canary}}"}[1m]))',
            },
            interval=10.0,
            count=3,
            failure_condition="result > 0.05",
            failure_limit=1,
            min_sample=30,
        ),
    ),
)
STABLE = StableRef(release_id=7, revision=3, version="tstable0000", desired=4)


def canary_plan(**changes: Any) -> ReleasePlan:
    """A plan using every field: probes, canary steps, templates, notifications, a way back."""
    plan = ReleasePlan(
        service="web",
        env="production",
        artifact=DIGEST,
        config={"GREETING": "hello", "LOG_LEVEL": "info"},
        instance=InstanceTemplate(
            command=("python3", "-m", "app"),
            port_env="HTTP_PORT",
            readiness=ProbeSpec("/ready", timeout=1.0, period=0.5, failure_threshold=2),
            liveness=ProbeSpec("/live", initial_delay=3.0),
            stop_grace=5.0,
            drain_timeout=12.5,
        ),
        desired=3,
        strategy=StrategySpec(
            kind="canary",
            max_surge=2,
            scale_down_delay=45.0,
            auto_promote=False,
            steps=(
                SetWeightStep(10),
                HeaderRouteStep("x-canary", "yes"),
                AnalysisStep("errors"),
                PauseStep(30.0),
                SetWeightStep(50),
                PauseStep(None),
            ),
            background_analysis="errors",
        ),
        progress_deadline=120.0,
        triggers=Triggers(error_rate=0.01, min_requests=50, window=30.0, verification=60.0),
        preview_check=False,
        analysis={"errors": ERRORS},
        notify=(
            NotifyTarget("https://hooks.example/a", ("release.failed",), secret_env="HOOK_A"),
            NotifyTarget("https://hooks.example/b", ("release.succeeded", "release.rolled_back")),
        ),
        router="haproxy",
        pinned_port=8080,
        stable=STABLE,
        commit="0123abcd" * 5,
    )
    return plan.evolve(**changes)


def through_json(data: dict[str, Any]) -> dict[str, Any]:
    """What a JSON column gives back: real text, no NaN, tuples become lists."""
    result: dict[str, Any] = json.loads(json.dumps(data, allow_nan=False))
    return result


# --- the JSON form -----------------------------------------------------------------------


def test_a_full_plan_round_trips_through_json_text() -> None:
    plan = canary_plan()
    data = through_json(plan.to_json())
    assert data["format"] == PLAN_FORMAT
    assert data["instance"]["command"] == ["python3", "-m", "app"]
    assert data["strategy"]["steps"][1] == {
        "type": "set_header_route",
        "header": "x-canary",
        "value": "yes",
    }
    assert data["stable"] == {
        "release_id": 7,
        "revision": 3,
        "version": "tstable0000",
        "desired": 4,
    }
    assert ReleasePlan.from_json(data) == plan


def test_a_minimal_plan_round_trips_with_its_defaults() -> None:
    plan = ReleasePlan(
        service="web",
        env="dev",
        artifact=DIGEST,
        config={},
        instance=InstanceTemplate(command="exec python3 app.py"),
        desired=1,
        strategy=StrategySpec(kind="recreate"),
    )
    back = ReleasePlan.from_json(through_json(plan.to_json()))
    assert back == plan
    assert (back.router, back.stable, back.analysis, back.notify) == ("builtin", None, {}, ())
    assert back.instance.command == "exec python3 app.py"  # a string stays a shell command


def test_the_retry_policy_is_frozen_and_absent_when_default() -> None:
    """Plans stored before retries existed read (and hash) as before."""
    plan = canary_plan()
    assert "retry" not in plan.to_json()
    tuned = dataclasses.replace(plan, retry=RetryPolicy(methods=("GET",), budget=0.05))
    data = through_json(tuned.to_json())
    assert data["retry"]["methods"] == ["GET"]
    assert ReleasePlan.from_json(data) == tuned
    assert tuned.content_hash != plan.content_hash


def test_a_plan_without_router_reads_back_as_unknown_router() -> None:
    """Plans built for releases stored before plans have ``router: null`` (see 0002)."""
    data = canary_plan(router=None).to_json()
    assert ReleasePlan.from_json(through_json(data)).router is None


@pytest.mark.parametrize("format_", [None, 0, 2, "1", 1.5])
def test_an_unknown_format_is_refused(format_: object) -> None:
    data = canary_plan().to_json()
    if format_ is None:
        del data["format"]
    else:
        data["format"] = format_
    with pytest.raises(ValueError, match="unknown release plan format"):
        ReleasePlan.from_json(data)


names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=8)
seconds = st.floats(0, 3600, allow_nan=False)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-1000, 1000) | seconds | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(names, inner, max_size=3),
    max_leaves=6,
)
probes = st.builds(
    ProbeSpec,
    path=st.text(min_size=1, max_size=10).map(lambda p: "/" + p),
    timeout=st.floats(0.1, 10),
    period=st.floats(0.1, 10),
    initial_delay=seconds,
    failure_threshold=st.integers(1, 10),
    success_threshold=st.integers(1, 10),
)
instances = st.builds(
    InstanceTemplate,
    command=st.text(min_size=1, max_size=20) | st.lists(names, min_size=1, max_size=4).map(tuple),
    port_env=st.sampled_from(["PORT", "HTTP_PORT"]),
    readiness=st.none() | probes,
    liveness=st.none() | probes,
    stop_grace=seconds,
    drain_timeout=seconds,
)
steps = st.one_of(
    st.builds(SetWeightStep, st.integers(0, 100)),
    st.builds(PauseStep, st.none() | seconds),
    st.builds(AnalysisStep, names),
    st.builds(HeaderRouteStep, names, names),
)
strategies = st.builds(
    StrategySpec,
    kind=st.sampled_from(["recreate", "rolling", "blue_green", "canary"]),
    max_surge=st.integers(0, 5),
    max_unavailable=st.integers(0, 5),
    scale_down_delay=seconds,
    auto_promote=st.booleans(),
    steps=st.lists(steps, max_size=6).map(tuple),
    background_analysis=st.none() | names,
)


@st.composite
def metrics(draw: st.DrawFn) -> MetricSpec:
    interval = draw(st.none() | st.floats(0.5, 600))
    count = draw(st.none() | (st.just(1) if interval is None else st.integers(1, 10)))
    condition = st.none() | st.sampled_from(["result > 0.05", "result < {{args.max}}"])
    return MetricSpec(
        name=draw(names),
        provider=draw(st.sampled_from(["prometheus", "web", "job", "builtin"])),
        config=draw(st.dictionaries(names, json_values, max_size=4)),
        interval=interval,
        count=count,
        initial_delay=draw(seconds),
        success_condition=draw(condition),
        failure_condition=draw(condition),
        failure_limit=draw(st.integers(-1, 5)),
        inconclusive_limit=draw(st.integers(-1, 5)),
        consecutive_error_limit=draw(st.integers(-1, 5)),
        min_sample=draw(st.integers(0, 100)),
        timeout=draw(st.floats(0.1, 120)),
    )


templates = st.builds(
    AnalysisTemplate,
    args=st.lists(names, max_size=3, unique=True).map(tuple),
    metrics=st.lists(metrics(), min_size=1, max_size=3).map(tuple),
)
stable_refs = st.builds(
    StableRef, st.integers(1, 10**6), st.integers(1, 10**4), names, st.integers(0, 20)
)
plans = st.builds(
    ReleasePlan,
    service=names,
    env=names,
    artifact=st.just(DIGEST),
    config=st.dictionaries(names, st.text(max_size=12), max_size=4),
    instance=instances,
    desired=st.integers(0, 20),
    strategy=strategies,
    progress_deadline=st.floats(1, 3600),
    triggers=st.builds(
        Triggers,
        error_rate=st.floats(0, 1),
        min_requests=st.integers(0, 1000),
        window=st.floats(1, 600),
        max_restarts=st.integers(0, 10),
        verification=seconds,
    ),
    preview_check=st.booleans(),
    analysis=st.dictionaries(names, templates, max_size=2),
    notify=st.lists(
        st.builds(
            NotifyTarget,
            webhook=names.map(lambda n: "https://hooks.example/" + n),
            events=st.lists(names, max_size=3).map(tuple),
            secret_env=st.none() | names,
        ),
        max_size=2,
    ).map(tuple),
    router=st.none() | st.sampled_from(["builtin", "haproxy"]),
    pinned_port=st.none() | st.integers(1, 65535),
    stable=st.none() | stable_refs,
    commit=st.none() | st.text("0123456789abcdef", min_size=7, max_size=40),
)


@given(plans)
def test_plan_round_trip_property(plan: ReleasePlan) -> None:
    data = through_json(plan.to_json())
    back = ReleasePlan.from_json(data)
    assert back == plan
    assert back.version == plan.version
    assert back.to_json() == data


# --- what is derived from a plan ---------------------------------------------------------


def test_version_is_the_template_key_of_what_runs() -> None:
    plan = canary_plan()
    assert plan.version == template_key(
        DIGEST, {"GREETING": "hello", "LOG_LEVEL": "info"}, ("python3", "-m", "app"), "HTTP_PORT"
    )
    assert plan.config_version == config_version({"GREETING": "hello", "LOG_LEVEL": "info"})


@pytest.mark.parametrize(
    "changes",
    [
        {"desired": 9},
        {"strategy": StrategySpec(kind="rolling")},
        {"analysis": {}},
        {"notify": ()},
        {"stable": None},
        {"triggers": Triggers()},
        {"progress_deadline": 5.0},
        {"pinned_port": None},
        {"commit": None},
        {"router": None},
    ],
    ids=lambda changes: next(iter(changes)),
)
def test_how_a_release_is_run_does_not_change_its_version(changes: dict[str, Any]) -> None:
    """Scaling or re-judging is not a new version: warm instances stay interchangeable."""
    assert canary_plan(**changes).version == canary_plan().version


@pytest.mark.parametrize(
    "changes",
    [
        {"artifact": "sha256:" + "cd" * 32},
        {"config": {"GREETING": "hi", "LOG_LEVEL": "info"}},
        {"instance": InstanceTemplate(command="python3 -m app", port_env="HTTP_PORT")},
        {"instance": InstanceTemplate(command=("python3", "-m", "app"))},
        {
            "instance": InstanceTemplate(
                command=("python3", "-m", "app"), port_env="HTTP_PORT", run_as="conveyor-run"
            )
        },
    ],
    ids=["artifact", "config", "command", "port_env", "run_as"],
)
def test_what_runs_changes_the_version(changes: dict[str, Any]) -> None:
    assert canary_plan(**changes).version != canary_plan().version


def test_run_as_is_frozen_and_keyed_only_when_set() -> None:
    """Instances as root and as an unprivileged user are not interchangeable; a plan without
    run_as keeps the key (and the JSON) it had before run_as existed."""
    instance = dataclasses.replace(canary_plan().instance, run_as="conveyor-run:svc")
    plan = canary_plan(instance=instance)
    assert plan.instance.to_json()["run_as"] == "conveyor-run:svc"
    assert "run_as" not in canary_plan().instance.to_json()
    back = ReleasePlan.from_json(json.loads(json.dumps(plan.to_json())))
    assert back.instance.run_as == "conveyor-run:svc" and back.version == plan.version
    assert canary_plan().version == template_key(
        DIGEST, {"GREETING": "hello", "LOG_LEVEL": "info"}, ("python3", "-m", "app"), "HTTP_PORT"
    )
    assert plan.returning(None).instance.run_as == "conveyor-run:svc"  # a rollback keeps it


def test_probes_and_stop_timings_are_not_part_of_the_version() -> None:
    instance = dataclasses.replace(canary_plan().instance, readiness=None, stop_grace=1.0)
    assert canary_plan(instance=instance).version == canary_plan().version


def test_rollout_spec_takes_the_numbers_the_store_gave() -> None:
    plan = canary_plan()
    assert plan.rollout_spec(42, 5) == RolloutSpec(
        release_id=42,
        revision=5,
        version=plan.version,
        desired=3,
        strategy=plan.strategy,
        progress_deadline=120.0,
        triggers=plan.triggers,
        stable_version="tstable0000",
        stable_revision=3,
        stable_desired=4,
        preview_check=False,
    )


def test_rollout_spec_of_a_first_deploy_has_no_way_back() -> None:
    spec = canary_plan(stable=None).rollout_spec(1, 1)
    assert (spec.stable_version, spec.stable_revision, spec.stable_desired) == (None, None, 0)
    assert (spec.release_id, spec.revision) == (1, 1)


def test_returning_drops_canary_steps_and_background_analysis_only() -> None:
    plan = canary_plan()
    way_back = StableRef(release_id=9, revision=4, version=plan.version, desired=3)
    back = plan.returning(way_back)
    assert back.strategy == dataclasses.replace(plan.strategy, steps=(), background_analysis=None)
    assert (back.strategy.kind, back.strategy.max_surge, back.strategy.auto_promote) == (
        "canary",
        2,
        False,
    )
    assert back.stable == way_back
    # Everything else is the plan it returns to: same bytes, config, instances, judges, people.
    assert back == dataclasses.replace(plan, strategy=back.strategy, stable=way_back)
    assert back.analysis == {"errors": ERRORS}
    assert back.notify == plan.notify
    assert back.version == plan.version
    assert plan.strategy.steps  # the original plan is untouched


@pytest.mark.parametrize("kind", ["recreate", "rolling", "blue_green"])
def test_returning_keeps_other_strategies_as_they_are(kind: str) -> None:
    strategy = StrategySpec(kind=kind, max_surge=3, scale_down_delay=5.0)  # type: ignore[arg-type]
    plan = canary_plan(strategy=strategy)
    back = plan.returning(None)
    assert back.strategy == strategy
    assert back.stable is None
    assert back == plan.evolve(stable=None)


@given(plans, st.none() | stable_refs)
def test_returning_property(plan: ReleasePlan, stable: StableRef | None) -> None:
    back = plan.returning(stable)
    assert back.stable == stable
    assert back.version == plan.version
    assert back.rollout_spec(1, 2).desired == plan.desired
    if plan.strategy.kind == "canary":
        assert back.strategy.steps == () and back.strategy.background_analysis is None
    else:
        assert back.strategy == plan.strategy
    assert dataclasses.replace(back, strategy=plan.strategy, stable=plan.stable) == plan


# --- analysis templates ------------------------------------------------------------------


def test_filled_substitutes_arguments_in_config_and_conditions() -> None:
    template = AnalysisTemplate(
        args=("canary", "max"),
        metrics=(
            MetricSpec(
                name="errors",
                provider="web",
                config={
                    "url": "http://metrics/{{args.canary}}/errors",
                    "headers": {"X-Version": "{{ args.canary }}"},
                    "argv": ["check", "--max={{args.max}}"],
                    "timeout": 5,
                    "verify": True,
                },
                success_condition="result < {{args.max}}",
                failure_condition="result >= {{args.max}} * 2",
            ),
            MetricSpec(name="plain", provider="builtin", config={"query": "error_rate"}),
        ),
    )
    errors, plain = template.filled({"canary": "r7", "max": "0.05", "unused": "x"})
    assert errors.config == {
        "url": "http://metrics/r7/errors",
        "headers": {"X-Version": "r7"},
        "argv": ["check", "--max=0.05"],
        "timeout": 5,
        "verify": True,
    }
    assert errors.success_condition == "result < 0.05"
    assert errors.failure_condition == "result >= 0.05 * 2"
    assert (errors.name, errors.provider) == ("errors", "web")
    assert plain == template.metrics[1]
    # The template stays as frozen: filled again for the next run with other arguments.
    assert template.metrics[0].config["url"] == "http://metrics/{{args.canary}}/errors"


def test_filled_leaves_conditions_that_are_not_given_alone() -> None:
    (metric,) = ERRORS.filled({"canary": "r2", "stable": "r1"})
    assert metric.success_condition is None
    assert metric.failure_condition == "result > 0.05"
    assert metric.config["query"] == 'sum(rate(errors{version="r2"}[1m]))'


def test_a_value_is_inserted_as_text_never_substituted_again() -> None:
    (metric,) = ERRORS.filled({"canary": "{{args.stable}}", "stable": "r1"})
    assert metric.config["query"] == 'sum(rate(errors{version="{{args.stable}}"}[1m]))'


def test_a_missing_declared_argument_is_an_error() -> None:
    with pytest.raises(TemplateArgumentError) as info:
        ERRORS.filled({"canary": "r2"})
    assert "'stable'" in info.value.message
    assert "canary, stable" in (info.value.hint or "")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("{{args.nope}}", "no value for argument 'nope'"),
        ("{{ secrets.token }}", "is not a placeholder Conveyor knows"),
        ("{{}}", "is not a placeholder Conveyor knows"),
    ],
)
def test_a_placeholder_without_a_value_is_an_error(text: str, fragment: str) -> None:
    template = AnalysisTemplate(
        args=("canary",),
        metrics=(MetricSpec(name="m", provider="web", config={"url": f"http://x/{text}"}),),
    )
    with pytest.raises(TemplateArgumentError) as info:
        template.filled({"canary": "r2"})
    assert fragment in info.value.message
    assert "metric m" in info.value.message
    assert info.value.hint


def test_a_placeholder_in_a_condition_without_a_value_is_an_error() -> None:
    template = AnalysisTemplate(
        args=(),
        metrics=(MetricSpec(name="m", provider="web", failure_condition="result > {{args.x}}"),),
    )
    with pytest.raises(TemplateArgumentError, match="no value for argument 'x'"):
        template.filled({})


def test_templates_round_trip_through_json() -> None:
    assert AnalysisTemplate.from_json(through_json(ERRORS.to_json())) == ERRORS


# --- secrets -----------------------------------------------------------------------------

DB = SecretRef("env", "SHOP_DB_PASSWORD")


def test_secret_references_round_trip_and_are_shown_as_references() -> None:
    plan = canary_plan(secrets={"DB_PASSWORD": DB, "TLS": SecretRef("file", "/run/s/tls")})
    data = through_json(plan.to_json())
    assert data["secrets"] == {
        "DB_PASSWORD": {"env": "SHOP_DB_PASSWORD"},
        "TLS": {"file": "/run/s/tls"},
    }
    assert ReleasePlan.from_json(data) == plan
    assert plan.config_shown() == {
        "DB_PASSWORD": {"secret": {"env": "SHOP_DB_PASSWORD"}},
        "GREETING": "hello",
        "LOG_LEVEL": "info",
        "TLS": {"secret": {"file": "/run/s/tls"}},
    }


def test_a_plan_without_secrets_keeps_its_json_and_its_keys() -> None:
    """Plans and template keys stored before secret references existed stay valid."""
    plan = canary_plan()
    assert "secrets" not in plan.to_json()
    assert plan.version == template_key(
        plan.artifact, plan.config, plan.instance.command, plan.instance.port_env
    )
    assert plan.config_version == config_version(plan.config)


def test_the_reference_is_identity_the_value_is_not() -> None:
    plain = canary_plan()
    secret = canary_plan(secrets={"DB_PASSWORD": DB})
    moved = canary_plan(secrets={"DB_PASSWORD": SecretRef("env", "OTHER")})
    as_file = canary_plan(secrets={"DB_PASSWORD": SecretRef("file", "SHOP_DB_PASSWORD")})
    versions = {p.version for p in (plain, secret, moved, as_file)}
    assert len(versions) == 4
    assert len({p.config_version for p in (plain, secret, moved, as_file)}) == 4
    # the same reference is the same version: no value takes part
    assert canary_plan(secrets={"DB_PASSWORD": DB}).version == secret.version
    # a literal config that spells the reference is still not the reference
    spelled = canary_plan(config={**plain.config, "DB_PASSWORD": "SHOP_DB_PASSWORD"})
    assert spelled.version != secret.version


@pytest.mark.parametrize(
    "data",
    [{}, {"env": "A", "file": "/b"}, {"vault": "x"}, {"env": ""}, {"env": 3}],
)
def test_a_malformed_secret_reference_is_refused(data: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        SecretRef.from_json(data)
