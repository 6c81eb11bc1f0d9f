"""The config models: defaults, strategy forms, per-environment helpers and the JSON Schema."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import ValidationError
from ruamel.yaml import YAML

from conveyor.config import (
    BlueGreenStrategy,
    ProjectConfig,
    RecreateStrategy,
    RollbackConfig,
    RollingStrategy,
    json_schema,
    parse_config,
)
from conveyor.errors import ConfigError, NotFound

EXAMPLE = """\
project: shop
rollback:
  error_rate: 5%
  min_requests: 20
  window: 10s
  max_restarts: 2
  verification: 15s
services:
  catalog:
    path: services/catalog
    build:
      run: "python3 -m compileall -q app"
      outputs: [app/, VERSION]
      timeout: 10m
    run: "python3 app/server.py"
    port_env: PORT
    instances: 2
    health:
      readiness: {path: /health/ready, timeout: 2s, period: 1s, initial_delay: 0s,
                  failure_threshold: 3, success_threshold: 1}
      liveness:  {path: /health/live,  timeout: 2s, period: 5s, initial_delay: 0s,
                  failure_threshold: 3, success_threshold: 1}
    config: {GREETING: hello, WORKERS: 4, DEBUG: false}
    stop: {grace_period: 10s, drain_timeout: 30s}
  search:
    build: {run: [make, build], outputs: [dist/]}
    run: [python3, dist/search.py]
environments:
  dev:
    strategy: recreate
  staging:
    target: local
    router: builtin
    strategy: {rolling: {max_surge: 1, max_unavailable: 0}}
    progress_deadline: 60s
    services:
      catalog: {instances: 3, config: {GREETING: hi}, port: 18080}
    rollback: {error_rate: 2%}
  production:
    strategy:
      blue_green: {scale_down_delay: 30s, auto_promote: true}
"""

MINIMAL = """\
project: shop
services:
  catalog:
    build: {run: make, outputs: [app/]}
    run: python3 app.py
environments:
  dev:
"""


@pytest.fixture(scope="module")
def example() -> ProjectConfig:
    return parse_config(EXAMPLE)


def test_every_default() -> None:
    config = parse_config(MINIMAL)
    assert config.rollback == RollbackConfig(
        error_rate=0.05, min_requests=1, window=10.0, max_restarts=2, verification=15.0
    )
    service = config.services["catalog"]
    assert (service.path, service.port_env, service.instances) == (".", "PORT", 1)
    assert service.build.timeout == 600.0
    assert service.health is None
    assert service.config == {}
    assert (service.stop.grace_period, service.stop.drain_timeout) == (10.0, 30.0)
    env = config.environments["dev"]
    assert (env.target, env.router, env.progress_deadline) == ("local", "builtin", 60.0)
    assert env.strategy == RollingStrategy(max_surge=1, max_unavailable=0)
    assert env.services == {}
    assert env.rollback is None


def test_probe_defaults_differ_for_liveness() -> None:
    config = parse_config(
        MINIMAL.replace(
            "    run: python3 app.py\n",
            "    run: python3 app.py\n    health:\n"
            "      readiness: {path: /ready}\n      liveness: {path: /live}\n",
        )
    )
    health = config.services["catalog"].health
    assert health is not None and health.readiness is not None and health.liveness is not None
    ready, live = health.readiness, health.liveness
    assert (ready.path, ready.timeout, ready.period, ready.initial_delay) == ("/ready", 2, 1, 0)
    assert (ready.failure_threshold, ready.success_threshold) == (3, 1)
    assert (live.path, live.period) == ("/live", 5.0)


def test_example_values(example: ProjectConfig) -> None:
    catalog = example.service("catalog")
    assert catalog.build.outputs == ["app/", "VERSION"]
    assert catalog.build.timeout == 600.0
    assert catalog.run == "python3 app/server.py"
    assert example.service("search").run == ["python3", "dist/search.py"]
    assert example.service("search").build.run == ["make", "build"]
    assert list(example.environments) == ["dev", "staging", "production"]


def test_strategy_forms(example: ProjectConfig) -> None:
    assert example.environment("dev").strategy == RecreateStrategy()
    assert example.environment("staging").strategy == RollingStrategy(
        max_surge=1, max_unavailable=0
    )
    assert example.environment("production").strategy == BlueGreenStrategy(
        scale_down_delay=30.0, auto_promote=True
    )
    for text in ("{rolling: }", "{rolling: {}}", "rolling"):
        config = parse_config(MINIMAL.replace("  dev:\n", f"  dev:\n    strategy: {text}\n"))
        assert config.environment("dev").strategy == RollingStrategy()


def test_dumped_config_validates_again(example: ProjectConfig) -> None:
    dumped = example.model_dump(mode="json")
    assert dumped["environments"]["production"]["strategy"] == {
        "kind": "blue_green",
        "scale_down_delay": 30.0,
        "auto_promote": True,
    }
    assert ProjectConfig.model_validate(dumped) == example


def test_models_are_frozen(example: ProjectConfig) -> None:
    with pytest.raises(ValidationError):
        example.service("catalog").instances = 5  # type: ignore[misc]


def test_unknown_names_raise_not_found_with_suggestions(example: ProjectConfig) -> None:
    with pytest.raises(NotFound) as caught:
        example.service("catalgo")
    assert caught.value.message == "unknown service 'catalgo' in project 'shop'"
    assert caught.value.hint == "did you mean 'catalog'? known services: catalog, search"
    with pytest.raises(NotFound) as caught:
        example.environment("prod")
    assert caught.value.hint is not None
    assert caught.value.hint.startswith("did you mean 'production'?")
    with pytest.raises(NotFound) as caught:
        example.environment("qa")
    assert caught.value.hint == "known environments: dev, staging, production"
    with pytest.raises(NotFound):
        example.effective_instances("catalog", "qa")


def test_effective_rollback_overlays_only_the_fields_set() -> None:
    config = parse_config(
        MINIMAL.replace("rollback", "x")
        .replace("project: shop\n", "project: shop\nrollback: {window: 30s, min_requests: 50}\n")
        .replace("  dev:\n", "  dev:\n    rollback: {error_rate: 2%}\n  prod:\n")
    )
    assert config.effective_rollback("dev") == RollbackConfig(
        error_rate=0.02, min_requests=50, window=30.0, max_restarts=2, verification=15.0
    )
    assert config.effective_rollback("prod") == config.rollback


def test_effective_instances_config_and_port(example: ProjectConfig) -> None:
    assert example.effective_instances("catalog", "dev") == 2
    assert example.effective_instances("catalog", "staging") == 3
    assert example.effective_instances("search", "staging") == 1
    assert example.effective_config("catalog", "dev") == {
        "GREETING": "hello",
        "WORKERS": "4",
        "DEBUG": "false",
    }
    assert example.effective_config("catalog", "staging") == {
        "GREETING": "hi",
        "WORKERS": "4",
        "DEBUG": "false",
    }
    assert example.effective_config("search", "staging") == {}
    assert example.pinned_port("catalog", "staging") == 18080
    assert example.pinned_port("catalog", "dev") is None


@pytest.mark.parametrize(
    ("surge", "unavailable", "desired", "counts"),
    [
        (1, 0, 3, (1, 0)),
        (0, 1, 3, (0, 1)),
        (2, 5, 3, (2, 3)),  # cannot lose more instances than exist
        ("25%", "25%", 10, (3, 2)),  # surge rounds up, unavailable rounds down
        ("50%", 0, 3, (2, 0)),
        (0, "10%", 3, (1, 0)),  # unavailable resolves to 0, so surge becomes 1
        ("100%", 0, 4, (4, 0)),
    ],
)
def test_rolling_counts(
    surge: int | str, unavailable: int | str, desired: int, counts: tuple[int, int]
) -> None:
    strategy = RollingStrategy(max_surge=surge, max_unavailable=unavailable)
    assert parse_config(MINIMAL).rolling_counts(strategy, desired) == counts


def test_rolling_counts_of_other_strategies() -> None:
    config = parse_config(MINIMAL)
    assert config.rolling_counts(RecreateStrategy(), 3) == (0, 3)
    assert config.rolling_counts(BlueGreenStrategy(), 3) == (3, 0)


def test_rolling_strategy_refuses_no_progress() -> None:
    with pytest.raises(ValidationError, match="cannot both be 0"):
        RollingStrategy(max_surge="0%", max_unavailable=0)


# --- JSON Schema ---------------------------------------------------------------------------


def _yaml(text: str) -> Any:
    return YAML(typ="safe").load(text)


def test_json_schema_structure() -> None:
    schema = json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] == "conveyor.yaml"
    assert schema["required"] == ["project", "services", "environments"]
    assert schema["additionalProperties"] is False
    service = schema["$defs"]["ServiceConfig"]
    assert service["additionalProperties"] is False
    assert all(field.get("description") for field in service["properties"].values())
    strategy = schema["$defs"]["EnvironmentConfig"]["properties"]["strategy"]
    by_kind = {option["type"]: option for option in strategy["anyOf"]}
    assert by_kind["string"]["enum"] == ["recreate", "rolling", "blue_green"]
    assert set(by_kind["object"]["properties"]) == {"recreate", "rolling", "blue_green", "canary"}
    duration = service["properties"]["stop"]
    assert duration == {"$ref": "#/$defs/StopConfig", "description": "How instances stop."}
    pattern = schema["$defs"]["StopConfig"]["properties"]["grace_period"]["anyOf"][1]["pattern"]
    for good in ("30s", "1m30s", "500ms", "2", "1.5h"):
        assert re.match(pattern, good), good
    for bad in ("", "30s1m", "ten", "1m30"):
        assert not re.match(pattern, bad), bad
    assert "(?P<" not in str(schema)  # Python-only regex syntax would break editors


def test_json_schema_accepts_the_example_and_rejects_typos() -> None:
    jsonschema = pytest.importorskip("jsonschema", reason="pip install jsonschema to run this")
    validator = jsonschema.Draft202012Validator(json_schema())
    validator.check_schema(json_schema())
    assert list(validator.iter_errors(_yaml(EXAMPLE))) == []
    assert list(validator.iter_errors(_yaml(MINIMAL.replace("  dev:\n", "  dev: {}\n")))) == []
    typo = _yaml(EXAMPLE.replace("instances: 2", "intances: 2"))
    assert [e.message for e in validator.iter_errors(typo)] == [
        "Additional properties are not allowed ('intances' was unexpected)"
    ]
    bad_strategy = _yaml(EXAMPLE.replace("strategy: recreate", "strategy: canary"))
    assert list(validator.iter_errors(bad_strategy))


RUN_AS_PROJECT = """\
project: shop
{top}services:
  catalog: {{build: {{run: make, outputs: [dist/]}}, run: app{catalog}}}
  search: {{build: {{run: make, outputs: [dist/]}}, run: app{search}}}
environments: {{dev: {{}}}}
pipeline: {{jobs: {{test: {{run: make test}}}}{pipeline}}}
"""


def run_as_project(top: str = "", catalog: str = "", search: str = "", pipeline: str = "") -> str:
    return RUN_AS_PROJECT.format(top=top, catalog=catalog, search=search, pipeline=pipeline)


@pytest.mark.parametrize(
    ("fields", "catalog", "search", "jobs"),
    [
        ({}, None, None, None),
        ({"top": "run_as: conveyor-run\n"}, "conveyor-run", "conveyor-run", "conveyor-run"),
        (
            {"top": "run_as: conveyor-run\n", "search": ", run_as: search-user:svc"},
            "conveyor-run",
            "search-user:svc",
            "conveyor-run",
        ),
        (  # null: this one keeps the server's (or the caller's) user
            {
                "top": "run_as: conveyor-run\n",
                "catalog": ", run_as: null",
                "pipeline": ", run_as: null",
            },
            None,
            "conveyor-run",
            None,
        ),
        ({"pipeline": ", run_as: ci-jobs"}, None, None, "ci-jobs"),
    ],
    ids=["none", "project-default", "service-own", "null-opts-out", "pipeline-only"],
)
def test_run_as_defaults_to_the_projects(
    fields: dict[str, str], catalog: str | None, search: str | None, jobs: str | None
) -> None:
    config = parse_config(run_as_project(**fields))
    assert (config.services["catalog"].run_as, config.services["search"].run_as) == (
        catalog,
        search,
    )
    assert config.pipeline is not None and config.pipeline.run_as == jobs


@pytest.mark.parametrize("value", ["'bad user'", "'root:'", "':wheel'", "'-x'", "a:b:c", "'1'"])
def test_a_run_as_that_is_not_a_user_name_is_refused_once_where_written(value: str) -> None:
    with pytest.raises(ConfigError) as failed:
        parse_config(run_as_project(top=f"run_as: {value}\n"))
    (problem,) = failed.value.problems  # not once more per service it would have reached
    assert problem.field == "run_as" and problem.line == 2
    assert "is not a user name" in problem.message
    assert "conveyor-run" in (problem.hint or "")


def test_run_as_is_in_the_json_schema() -> None:
    schema = json_schema()
    assert "run_as" in schema["properties"]
    pattern = schema["properties"]["run_as"]["anyOf"][0]["pattern"]
    assert re.fullmatch(pattern, "conveyor-run:svc") and not re.fullmatch(pattern, "a b")
