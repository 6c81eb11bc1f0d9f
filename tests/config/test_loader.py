"""Loading conveyor.yaml: every mistake is located (line, field) and explained (message, hint)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conveyor.config import LoadedProject, ProjectConfig, find_config, load_project, parse_config
from conveyor.errors import ConfigError, ConfigProblem

SERVICE = """\
services:
  catalog:
    build: {run: make, outputs: [app/]}
    run: python3 app.py
"""
ENVS = """\
environments:
  dev: {strategy: recreate}
"""


def doc(text: str) -> str:
    return textwrap.dedent(text)


# (yaml, line, field, message substring, hint substring)
BROKEN: list[tuple[str, int | None, str, str, str]] = [
    # unknown keys, with and without a close suggestion
    (
        "project: shop\n" + SERVICE + "    intances: 2\n" + ENVS,
        6,
        "services.catalog.intances",
        "unknown field 'intances'",
        "did you mean 'instances'?",
    ),
    (
        "project: shop\n" + SERVICE + "    zzz: 2\n" + ENVS,
        6,
        "services.catalog.zzz",
        "unknown field 'zzz'",
        "allowed fields: path, build, run, port_env, instances",
    ),
    # retries: only idempotent methods, a real budget
    (
        "project: shop\n" + SERVICE + "environments:\n  dev:\n    retries:\n"
        "      methods: [GET, POST]\n",
        9,
        "environments.dev.retries.methods",
        "POST is not idempotent",
        "list only idempotent methods",
    ),
    (
        "project: shop\n" + SERVICE + "environments:\n  dev:\n    retries:\n      methods: [get]\n",
        9,
        "environments.dev.retries.methods",
        "'get' is not an HTTP method",
        "write methods in capitals",
    ),
    (
        "project: shop\n" + SERVICE + "environments:\n  dev:\n    retries: {budget: 150%}\n",
        8,
        "environments.dev.retries.budget",
        "cannot exceed 100%",
        "percentage",
    ),
    (
        "project: shop\nrollbak: {}\n" + SERVICE + ENVS,
        2,
        "rollbak",
        "unknown field 'rollbak'",
        "did you mean 'rollback'?",
    ),
    (
        "project: shop\n" + SERVICE + "environments:\n  dev:\n    stratgy: recreate\n",
        8,
        "environments.dev.stratgy",
        "unknown field 'stratgy'",
        "did you mean 'strategy'?",
    ),
    (
        "project: shop\n"
        + SERVICE
        + "environments:\n  dev:\n    strategy:\n      rolling: {max_sruge: 2}\n",
        9,
        "environments.dev.strategy.rolling.max_sruge",
        "unknown field 'max_sruge'",
        "did you mean 'max_surge'?",
    ),
    # wrong types
    (
        "project: shop\n" + SERVICE + "    instances: many\n" + ENVS,
        6,
        "services.catalog.instances",
        "expected a whole number, got 'many'",
        "use a whole number of at least 1, e.g. instances: 1",
    ),
    (
        "project: shop\n" + SERVICE + "    instances: true\n" + ENVS,
        6,
        "services.catalog.instances",
        "expected a whole number, got true",
        "use a whole number of at least 1, e.g. instances: 1",
    ),
    (
        "project: shop\n" + SERVICE + "    health: /health\n" + ENVS,
        6,
        "services.catalog.health",
        "expected a mapping of fields, got '/health'",
        "it takes: readiness, liveness",
    ),
    (
        "project: shop\nservices:\n  catalog:\n    build: {run: make, outputs: app/}\n"
        "    run: x\n" + ENVS,
        4,
        "services.catalog.build.outputs",
        "expected a list, got 'app/'",
        "",
    ),
    (
        "project: shop\n" + SERVICE + "    config: {TAGS: [a, b]}\n" + ENVS,
        6,
        "services.catalog.config.TAGS",
        "config values must be a string, number, true/false or a secret reference, got a list",
        "quote the value",
    ),
    (
        "project: shop\n" + SERVICE + "    instances: 0\n" + ENVS,
        6,
        "services.catalog.instances",
        "must be at least 1, got 0",
        "use a whole number of at least 1, e.g. instances: 1",
    ),
    # a scalar or a mapping where a list belongs: the hint shows the list form
    (
        "project: shop\n" + SERVICE.replace("[app/]", "app/") + ENVS,
        4,
        "services.catalog.build.outputs",
        "expected a list, got 'app/'",
        "write it as a list, e.g. outputs: [app/]",
    ),
    (
        "project: shop\nnotify: {webhook: x}\n" + SERVICE + ENVS,
        2,
        "notify",
        "expected a list, got a mapping",
        "write it as a list: notify: [a, b], or one '- entry' line each under 'notify:'",
    ),
    # a pattern mismatch says what the field is and shows an example
    (
        "project: shop\nnotify:\n  - webhook: example.com/hook\n" + SERVICE + ENVS,
        3,
        "notify[0].webhook",
        "'example.com/hook' does not match the pattern ^https?://",
        "URL that receives a JSON POST per notification, e.g. webhook: http://",
    ),
    # bounds: the hint gives the field's whole range (not just the broken end) and an example
    (
        "project: shop\n" + SERVICE + "environments:\n  dev:\n    services:\n"
        "      catalog: {port: 70000}\n",
        9,
        "environments.dev.services.catalog.port",
        "must be at most 65535, got 70000",
        "use a whole number from 1 to 65535, e.g. port: 18080",
    ),
    (
        "project: shop\n" + SERVICE + "environments:\n  dev:\n    services:\n"
        "      catalog: {port: true}\n",
        9,
        "environments.dev.services.catalog.port",
        "expected a whole number, got true",
        "use a whole number from 1 to 65535",
    ),
    (
        "project: shop\n" + SERVICE + "environments:\n  dev:\n"
        "    strategy: {canary: {steps: [{set_weight: 150}]}}\n",
        8,
        "environments.dev.strategy.canary.steps[0].set_weight",
        "must be at most 100, got 150",
        "use a whole number from 0 to 100, e.g. set_weight: 20",
    ),
    (
        "project: shop\n" + SERVICE + ENVS + "analysis:\n  t:\n    metrics:\n"
        "      - {name: m, query: compare_latency, compare: {beta: 0.5}}\n",
        11,
        "analysis.t.metrics[0].compare.beta",
        "must be less than 0.5, got 0.5",
        "use a number of more than 0 and less than 0.5",
    ),
    # durations and percentages
    (
        "project: shop\n" + SERVICE + "    stop: {grace_period: 10 seconds}\n" + ENVS,
        6,
        "services.catalog.stop.grace_period",
        "expected a duration like 30s or 2m, got '10 seconds'",
        "500ms, 30s, 2m",
    ),
    (
        "project: shop\n"
        + SERVICE
        + "    health:\n      readiness:\n        path: /ready\n        timeout: -1s\n"
        + ENVS,
        9,
        "services.catalog.health.readiness.timeout",
        "cannot be negative",
        "duration like",
    ),
    (
        "project: shop\n" + SERVICE + "environments:\n  dev:\n    progress_deadline: 0s\n",
        8,
        "environments.dev.progress_deadline",
        "must be longer than 0",
        "positive",
    ),
    (
        "project: shop\nrollback:\n  error_rate: 5\n" + SERVICE + ENVS,
        3,
        "rollback.error_rate",
        "expected a fraction between 0 and 1, got 5",
        "5%",
    ),
    (
        "project: shop\nrollback: {error_rate: 150%}\n" + SERVICE + ENVS,
        2,
        "rollback.error_rate",
        "cannot exceed 100%",
        "percentage like 5%",
    ),
    (
        "project: shop\n" + SERVICE + "environments:\n  dev:\n    strategy:\n"
        "      rolling: {max_surge: 0, max_unavailable: 0%}\n",
        9,
        "environments.dev.strategy.rolling",
        "cannot both be 0",
        "max_surge: 1",
    ),
    (
        "project: shop\n" + SERVICE + "environments:\n  dev:\n    progress_deadline: 10s\n"
        "    strategy:\n      rolling: {min_ready: 30s}\n",
        7,
        "environments.dev",
        "min_ready (30s) must be shorter than progress_deadline (10s)",
        "raise progress_deadline above 30s",
    ),
    (
        "project: shop\n" + SERVICE + "environments:\n  dev:\n    strategy:\n"
        "      rolling: {max_surge: lots}\n",
        9,
        "environments.dev.strategy.rolling.max_surge",
        "expected a whole number or a percentage like 25%, got 'lots'",
        "percentage such as 25%",
    ),
    # missing required fields: reported at the nearest existing parent
    (
        SERVICE + ENVS,
        1,
        "project",
        "missing required field 'project'",
        "add 'project:'",
    ),
    (
        "project: shop\nservices:\n  catalog:\n    build: {run: make, outputs: [app/]}\n" + ENVS,
        3,
        "services.catalog.run",
        "missing required field 'run'",
        "add 'run:' (Command started in the unpacked artifact",
    ),
    (
        "project: shop\n" + SERVICE,
        1,
        "environments",
        "missing required field 'environments'",
        "promotion order",
    ),
    # unknown strategy, unknown target
    (
        "project: shop\n" + SERVICE + "environments:\n  dev:\n    strategy: blue-green\n",
        8,
        "environments.dev.strategy",
        "unknown strategy 'blue-green'",
        "did you mean 'blue_green'? known strategies: recreate, rolling, blue_green",
    ),
    (
        "project: shop\n" + SERVICE + "environments:\n  dev:\n    strategy: {canary: {}}\n",
        8,
        "environments.dev.strategy.canary.steps",
        "missing required field 'steps'",
        "add 'steps:'",
    ),
    (
        "project: shop\n" + SERVICE + "environments:\n  dev:\n    strategy: {canery: {}}\n",
        8,
        "environments.dev.strategy",
        "unknown strategy 'canery'",
        "did you mean 'canary'?",
    ),
    (
        "project: shop\n" + SERVICE + "environments:\n  dev:\n    target: kubernetes\n",
        8,
        "environments.dev.target",
        "unsupported target 'kubernetes'",
        "local",
    ),
    # cross references
    (
        "project: shop\n"
        + SERVICE
        + "environments:\n  dev:\n    services:\n      catalgo: {instances: 2}\n",
        9,
        "environments.dev.services.catalgo",
        "environment 'dev' overrides unknown service 'catalgo'",
        "did you mean 'catalog'?",
    ),
    (
        "project: shop\n"
        + SERVICE
        + "environments:\n  dev:\n    services: {catalog: {port: 18080}}\n"
        + "  prod:\n    services: {catalog: {port: 18080}}\n",
        10,
        "environments.prod.services.catalog.port",
        "port 18080 is already pinned by service 'catalog' in environment 'dev'",
        "distinct port",
    ),
    # empty collections, bad names and paths
    (
        "project: shop\nservices: {}\n" + ENVS,
        2,
        "services",
        "must not be empty",
        "add at least one entry",
    ),
    (
        "project: Shop_1\n" + SERVICE + ENVS,
        1,
        "project",
        "'Shop_1' is not a valid name",
        "lowercase letters, digits and '-'",
    ),
    (
        "project: shop\nservices:\n  Catalog:\n    build: {run: make, outputs: [app/]}\n"
        "    run: x\n" + ENVS,
        3,
        "services.Catalog",
        "'Catalog' is not a valid name",
        "lowercase",
    ),
    (
        "project: shop\nservices:\n  catalog:\n    build:\n      run: make\n"
        "      outputs:\n        - app/\n        - ../secrets\n    run: x\n" + ENVS,
        8,
        "services.catalog.build.outputs[1]",
        "must not leave its directory ('..')",
        "inside the service directory",
    ),
    (
        "project: shop\nservices:\n  catalog:\n    path: /srv/catalog\n"
        "    build: {run: make, outputs: [app/]}\n    run: x\n" + ENVS,
        4,
        "services.catalog.path",
        "must be relative",
        "relative to the service directory",
    ),
    # YAML syntax
    (
        "project: shop\nservices:\n\tcatalog: {}\n",
        3,
        "(yaml)",
        "invalid YAML",
        "indent with spaces",
    ),
    (
        "project: shop\nservices:\n  catalog:\n    run: x\n   build: y\n",
        5,
        "(yaml)",
        "invalid YAML",
        "indentation",
    ),
    (
        "project: shop\nservices: [a, b\n",
        3,
        "(yaml)",
        "invalid YAML",
        "indentation, colons and quotes",
    ),
    (
        "project: shop\n" + SERVICE + "    run: python3 other.py\n" + ENVS,
        6,
        "run",
        "duplicate key 'run'",
        "merge or remove one",
    ),
    (
        "project: shop\nproject: shop2\n" + SERVICE + ENVS,
        2,
        "project",
        "duplicate key 'project'",
        "appear once",
    ),
    # whole-document shapes
    ("", None, "(file)", "the file is empty", "project: NAME"),
    ("- a\n- b\n", 1, "(file)", "expected a mapping of fields at the top level", "project:"),
]


@pytest.mark.parametrize(("text", "line", "field", "message", "hint"), BROKEN)
def test_broken_file_is_located_and_explained(
    text: str, line: int | None, field: str, message: str, hint: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "conveyor.yaml")
    problems = caught.value.problems
    matching = [p for p in problems if p.field == field]
    assert matching, f"no problem for {field!r} in {[p.render() for p in problems]}"
    problem = matching[0]
    assert problem.file == "conveyor.yaml"
    assert problem.line == line, problem.render()
    assert message in problem.message, problem.render()
    assert hint in (problem.hint or ""), problem.render()


def test_table_is_broad() -> None:
    assert len(BROKEN) >= 20


def test_every_problem_is_reported_not_just_the_first() -> None:
    text = doc(
        """\
        project: Shop
        services:
          catalog:
            intances: 2
            build: {run: make, outputs: [../x]}
            run: python3 app.py
        environments:
          dev:
            strategy: blue-green
            services:
              catalgo: {instances: 2}
        """
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    found = {(p.line, p.field) for p in caught.value.problems}
    assert found == {
        (1, "project"),
        (4, "services.catalog.intances"),
        (5, "services.catalog.build.outputs[0]"),
        (9, "environments.dev.strategy"),
        (11, "environments.dev.services.catalgo"),
    }
    lines = [p.line or 0 for p in caught.value.problems]
    assert lines == sorted(lines)
    assert caught.value.hint == "fix the 5 problems above"
    rendered = caught.value.message
    assert "conveyor.yaml:4: services.catalog.intances: unknown field 'intances'" in rendered
    assert caught.value.exit_code == 2


def test_syntax_error_carries_a_column() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("project: shop\nservices:\n  catalog: {run: [a, b}\n")
    [problem] = caught.value.problems
    assert problem.line == 3
    assert problem.column is not None and problem.column > 1


def test_recursive_alias_is_a_config_error_not_a_crash() -> None:
    with pytest.raises(ConfigError):
        parse_config("project: shop\nservices: &s\n  a: *s\nenvironments: &e {dev: *e}\n")


def test_alias_bomb_is_bounded() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 12)]
    with pytest.raises(ConfigError) as caught:
        parse_config("\n".join(lines) + "\n")
    assert "too large" in caught.value.problems[0].message


def test_yaml_anchors_and_merge_keys_still_work(tmp_path: Path) -> None:
    text = doc(
        """\
        project: shop
        services:
          catalog: &svc
            build: {run: make, outputs: [app/]}
            run: python3 app.py
          search:
            <<: *svc
            instances: 3
            intances: 1
        environments: {dev: }
        """
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    [problem] = caught.value.problems
    assert (problem.line, problem.field) == (9, "services.search.intances")
    config = parse_config(text.replace("    intances: 1\n", ""))
    assert config.services["search"].instances == 3
    assert config.services["search"].run == "python3 app.py"


def test_dates_and_odd_scalars_become_text() -> None:
    config = parse_config(
        "project: shop\n" + SERVICE + "    config: {RELEASED: 2024-01-01, RATIO: 0.5}\n" + ENVS
    )
    assert config.effective_config("catalog", "dev") == {"RELEASED": "2024-01-01", "RATIO": "0.5"}


def test_find_config_prefers_yaml_and_accepts_yml(tmp_path: Path) -> None:
    (tmp_path / "conveyor.yml").write_text("x: 1\n")
    assert find_config(tmp_path) == tmp_path / "conveyor.yml"
    (tmp_path / "conveyor.yaml").write_text("x: 1\n")
    assert find_config(tmp_path) == tmp_path / "conveyor.yaml"
    assert find_config(tmp_path / "conveyor.yml") == tmp_path / "conveyor.yml"


def test_missing_file_names_the_path_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        find_config(tmp_path)
    [problem] = caught.value.problems
    assert problem == ConfigProblem(
        file=str(tmp_path / "conveyor.yaml"),
        line=None,
        field="(file)",
        message=f"no conveyor.yaml in {tmp_path}",
        hint="run inside a project or pass -C DIR",
    )
    assert caught.value.hint == "run inside a project or pass -C DIR"


def test_load_project_resolves_file_and_root(tmp_path: Path) -> None:
    project = tmp_path / "shop"
    project.mkdir()
    (project / "conveyor.yaml").write_text("project: shop\n" + SERVICE + ENVS)
    loaded = load_project(project)
    assert loaded == LoadedProject(
        config=loaded.config, file=(project / "conveyor.yaml").resolve(), root=project.resolve()
    )
    assert isinstance(loaded.config, ProjectConfig)
    assert load_project(project / "conveyor.yaml") == loaded


def test_problems_name_the_real_file(tmp_path: Path) -> None:
    (tmp_path / "conveyor.yaml").write_text("project: shop\nservices: {}\n" + ENVS)
    with pytest.raises(ConfigError) as caught:
        load_project(tmp_path)
    assert caught.value.problems[0].file == str((tmp_path / "conveyor.yaml").resolve())


def test_binary_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "conveyor.yaml").write_bytes(b"project: \xff\xfe\n")
    with pytest.raises(ConfigError) as caught:
        load_project(tmp_path)
    assert caught.value.problems[0].field == "(file)"


YAMLISH = st.lists(
    st.sampled_from(
        [
            "project: shop",
            "project:",
            "services:",
            "environments:",
            "  catalog:",
            "  dev:",
            "    build: {run: make, outputs: [app/]}",
            "    run: x",
            "    run: [a, 1]",
            "    strategy: rolling",
            "    strategy: {blue_green: {scale_down_delay: 1m}}",
            "    instances: -1",
            "    services: {catalog: {port: 99999}}",
            "    config: {A: &x [1]}",
            "  - item",
            "\t- tab",
            "rollback: {error_rate: 5%, window: 1m30s}",
            "  <<: *x",
            "? [complex]",
            ": value",
            "key: 'unterminated",
            "---",
            "!!int nope",
            "a: !!float x",
            "{",
            "]",
            "%YAML 1.2",
            "&anchor",
            "*missing",
        ]
    )
    | st.text(max_size=12),
    max_size=14,
).map("\n".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(YAMLISH | st.text(max_size=80))
def test_any_text_gives_a_config_or_a_config_error(text: str) -> None:
    try:
        result = parse_config(text)
    except ConfigError as exc:
        assert exc.problems
        for problem in exc.problems:
            assert problem.message
            assert problem.line is None or problem.line >= 1
    else:
        assert isinstance(result, ProjectConfig)


def test_retries_default_to_idempotent_methods_and_freeze_into_a_policy() -> None:
    text = (
        "project: shop\n" + SERVICE + "environments:\n  dev: {}\n  prod:\n"
        "    retries: {methods: [GET, PUT], budget: 10%, min_retries: 5, window: 30s}\n"
    )
    config = parse_config(text)
    dev = config.environment("dev").retries.frozen()
    assert dev.methods == ("GET", "HEAD", "OPTIONS") and dev.budget == 0.2
    prod = config.environment("prod").retries.frozen()
    assert (prod.methods, prod.budget, prod.min_retries, prod.window) == (
        ("GET", "PUT"),
        0.1,
        5,
        30.0,
    )
