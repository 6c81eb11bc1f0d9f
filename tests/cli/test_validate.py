"""`conveyor validate` and `conveyor schema`: what a user sees for every kind of broken config.

The loader's own tests check the problems it computes; these check what reaches the user
through the real command: the exit code (2 for config errors), ``file:line``, the dotted
field and a hint, in both the human and the ``--json`` forms, and never a traceback. All the
invocations run once, concurrently, in a module fixture (each is a fresh interpreter, about
0.8 s of imports), and every case asserts on its own results.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
from ruamel.yaml import YAML

from tests.controller.harness import write_project

from .support import Result, assert_clean_error, cli_env, conveyor

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "shop" / "conveyor.yaml"

BASE = """\
project: shop
services:
  catalog:
    build: {run: "true", outputs: [app]}
    run: "python3 app.py"
environments:
  staging: {}
"""
RUN = '    run: "python3 app.py"\n'


def _service(extra: str) -> str:
    """BASE with ``extra`` (indented for a service field) after the catalog's run line."""
    return BASE.replace(RUN, RUN + extra)


@dataclass(frozen=True)
class Case:
    name: str
    text: str
    line: int
    field: str
    message: str
    hint: str  # a fragment the hint must contain


CASES = [
    Case(
        "typo-top-level",
        BASE + "enviroments: {}\n",
        8,
        "enviroments",
        "unknown field 'enviroments'",
        "did you mean 'environments'?",
    ),
    Case(
        "nested-typo",
        _service("    health:\n      readiness: {path: /ready, perod: 1s}\n"),
        7,
        "services.catalog.health.readiness.perod",
        "unknown field 'perod'",
        "did you mean 'period'?",
    ),
    Case(
        "missing-run",
        BASE.replace(RUN, ""),
        3,
        "services.catalog.run",
        "missing required field 'run'",
        "add 'run:'",
    ),
    Case(
        "bad-duration",
        BASE + "rollback:\n  window: 10 seconds\n",
        9,
        "rollback.window",
        "expected a duration",
        "30s, 2m",
    ),
    Case(
        "percentage-over-100",
        BASE + "rollback:\n  error_rate: 150%\n",
        9,
        "rollback.error_rate",
        "cannot exceed 100%",
        "5%",
    ),
    Case(
        "strategy-typo",
        BASE.replace("staging: {}", "staging: {strategy: rollin}"),
        7,
        "environments.staging.strategy",
        "unknown strategy 'rollin'",
        "did you mean 'rolling'?",
    ),
    Case(
        "rolling-cannot-progress",
        BASE.replace(
            "staging: {}",
            "staging:\n    strategy: {rolling: {max_surge: 0, max_unavailable: 0}}",
        ),
        8,
        "environments.staging.strategy.rolling",
        "cannot both be 0",
        "max_surge: 1",
    ),
    Case(
        "override-of-unknown-service",
        BASE.replace("staging: {}", "staging:\n    services:\n      catalogue: {instances: 2}"),
        9,
        "environments.staging.services.catalogue",
        "unknown service 'catalogue'",
        "did you mean 'catalog'?",
    ),
    Case(
        "pinned-port-twice",
        BASE
        + "  prod:\n    services:\n      catalog: {port: 18080}\n"
        + "  dev:\n    services:\n      catalog: {port: 18080}\n",
        13,
        "environments.dev.services.catalog.port",
        "port 18080 is already pinned",
        "distinct port",
    ),
    Case(
        "tab-indentation",
        BASE.replace("    run:", "\trun:"),
        5,
        "(yaml)",
        "invalid YAML",
        "indent with spaces",
    ),
    Case(
        "duplicate-key",
        BASE + "project: again\n",
        8,
        "project",
        "duplicate key 'project'",
        "each key may appear once",
    ),
    Case(
        "bad-service-name",
        BASE.replace("  catalog:", "  Catalog_Svc:"),
        3,
        "services.Catalog_Svc",
        "not a valid name",
        "lowercase letters",
    ),
    Case(
        "absolute-output",
        BASE.replace("outputs: [app]", "outputs: [/etc/app]"),
        4,
        "services.catalog.build.outputs[0]",
        "must be relative",
        "relative to the service directory",
    ),
    Case(
        "config-value-is-a-mapping",
        _service("    config:\n      DB: {host: x}\n"),
        7,
        "services.catalog.config.DB",
        "must be a string, number, true/false or a secret reference",
        "quote the value",
    ),
    Case(
        "build-is-a-string",
        BASE.replace('build: {run: "true", outputs: [app]}', "build: make"),
        4,
        "services.catalog.build",
        "expected a mapping",
        "run, outputs, timeout",
    ),
    Case(
        "top-level-list",
        "- project\n- shop\n",
        1,
        "(file)",
        "expected a mapping of fields at the top level",
        "project: NAME",
    ),
    # Bounds and booleans: the hint gives the field's range and an example.
    Case(
        "zero-instances",
        _service("    instances: 0\n"),
        6,
        "services.catalog.instances",
        "must be at least 1, got 0",
        "use a whole number of at least 1, e.g. instances: 1",
    ),
    Case(
        "boolean-instances",
        _service("    instances: true\n"),
        6,
        "services.catalog.instances",
        "expected a whole number, got true",
        "use a whole number of at least 1, e.g. instances: 1",
    ),
    Case(
        "port-out-of-range",
        BASE.replace("staging: {}", "staging:\n    services:\n      catalog: {port: 70000}"),
        9,
        "environments.staging.services.catalog.port",
        "must be at most 65535",
        "use a whole number from 1 to 65535, e.g. port: 18080",
    ),
]
# Cross-field rules JSON Schema cannot state (both bounds 0, unknown or twice-pinned names).
_BEYOND_SCHEMA = {"rolling-cannot-progress", "override-of-unknown-service", "pinned-port-twice"}


@dataclass(frozen=True)
class Validated:
    file: Path
    human: Result
    json: Result


@pytest.fixture(scope="module")
def validated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Validated]:
    base = tmp_path_factory.mktemp("configs")
    files = {}
    for case in CASES:
        (base / case.name).mkdir()
        files[case.name] = base / case.name / "conveyor.yaml"
        files[case.name].write_text(case.text)
    with ThreadPoolExecutor(max_workers=4) as pool:
        human = {n: pool.submit(conveyor, "validate", root=f.parent) for n, f in files.items()}
        js = {
            n: pool.submit(conveyor, "validate", "--json", root=f.parent) for n, f in files.items()
        }
        return {n: Validated(files[n].resolve(), human[n].result(), js[n].result()) for n in files}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_broken_config_names_file_line_field_and_hint(
    case: Case, validated: dict[str, Validated]
) -> None:
    run = validated[case.name]
    for result in (run.human, run.json):
        assert_clean_error(result, 2)

    body = run.json.json()
    assert body["error"] == "ConfigError"
    [problem] = body["problems"]
    assert problem["file"] == str(run.file)
    assert problem["line"] == case.line
    assert problem["field"] == case.field
    assert case.message in problem["message"]

    human = run.human.stderr
    assert f"{run.file}:{case.line}" in human
    assert case.field in human
    assert case.message in human
    assert case.hint in problem["hint"]
    assert f"hint: {problem['hint']}" in human


def test_several_problems_are_reported_together(tmp_path: Path) -> None:
    text = BASE.replace("staging: {}", "staging: {strategy: rollin}") + "enviroments: {}\n"
    (tmp_path / "conveyor.yaml").write_text(text)
    result = conveyor("validate", "--json", root=tmp_path)
    assert_clean_error(result, 2)
    body = result.json()
    assert [(p["line"], p["field"]) for p in body["problems"]] == [
        (7, "environments.staging.strategy"),
        (8, "enviroments"),
    ]
    assert body["hint"] == "fix the 2 problems above"


def test_valid_config_says_ok(tmp_path: Path) -> None:
    (tmp_path / "conveyor.yaml").write_text(EXAMPLE.read_text())
    human = conveyor("validate", root=tmp_path)
    assert human.code == 0, human
    assert "ok" in human.stdout and "project 'shop'" in human.stdout, human
    js = conveyor("validate", "--json", root=tmp_path)
    assert js.code == 0, js
    assert js.json() == {
        "environments": ["dev", "staging", "production"],
        "file": str((tmp_path / "conveyor.yaml").resolve()),
        "project": "shop",
        "services": ["pricing", "catalog"],
        "valid": True,
    }


@pytest.mark.parametrize(
    ("where", "message"),
    [("empty", "no conveyor.yaml in"), ("missing", "no such directory")],
)
def test_directory_without_a_config(tmp_path: Path, where: str, message: str) -> None:
    directory = tmp_path / "nothing-here"
    if where == "empty":
        directory.mkdir()
    human = conveyor("status", root=directory)
    assert_clean_error(human, 2)
    assert message in human.stderr and "pass -C DIR" in human.stderr, human
    js = conveyor("validate", "--json", root=directory)
    assert_clean_error(js, 2)
    [problem] = js.json()["problems"]
    assert problem["file"] == str(directory / "conveyor.yaml")
    assert problem["line"] is None
    assert message in problem["message"]
    assert problem["hint"] == "run inside a project or pass -C DIR"


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "conveyor.yaml").write_text("")
    result = conveyor("validate", "--json", root=tmp_path)
    assert_clean_error(result, 2)
    [problem] = result.json()["problems"]
    assert problem["message"] == "the file is empty"
    assert "project: NAME" in problem["hint"]


def test_missing_file_option(tmp_path: Path) -> None:
    result = conveyor("--file", "other.yaml", "validate", root=tmp_path)
    assert_clean_error(result, 2)
    assert "no such file" in result.stderr and "check --file" in result.stderr, result


def test_user_text_is_not_rich_markup(tmp_path: Path) -> None:
    """A key that looks like markup is shown as written (a name argument that does: see
    test_server_commands.py)."""
    (tmp_path / "conveyor.yaml").write_text(BASE + '"[/x]": 1\n')
    result = conveyor("validate", root=tmp_path)
    assert_clean_error(result, 2)
    assert "'[/x]'" in result.stderr, result


def test_error_location_is_not_wrapped_when_piped(tmp_path: Path) -> None:
    deep = tmp_path / "a-project-directory-with-a-long-name" / "and-another-level-below-it"
    deep.mkdir(parents=True)
    (deep / "conveyor.yaml").write_text(BASE + "enviroments: {}\n")
    env = cli_env()
    env.pop("COLUMNS")
    result = conveyor("validate", root=deep, env=env)
    assert_clean_error(result, 2)
    assert f"{(deep / 'conveyor.yaml').resolve()}:8" in result.stderr, result


# --- conveyor schema ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    result = conveyor("schema")
    assert result.code == 0, result
    body = result.json()
    assert conveyor("schema", "--json").json() == body
    assert isinstance(body, dict)
    return body


def _yaml(path: Path) -> object:
    return YAML(typ="safe").load(path.read_text())


def test_schema_is_a_valid_json_schema(schema: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] == "conveyor.yaml"
    assert set(schema["required"]) == {"project", "services", "environments"}


def test_example_and_harness_configs_validate_against_schema(
    schema: dict[str, Any], tmp_path: Path
) -> None:
    validator = jsonschema.Draft202012Validator(schema)
    write_project(tmp_path, project="cli-schema")
    for path in (EXAMPLE, tmp_path / "conveyor.yaml"):
        errors = [e.message for e in validator.iter_errors(_yaml(path))]
        assert errors == [], (path, errors)


SCHEMA_CASES = [
    pytest.param(c, id=c.name)
    for c in CASES
    if c.field not in ("(yaml)", "project")  # YAML-level errors: not a schema question
    and c.name not in _BEYOND_SCHEMA
]


@pytest.mark.parametrize("case", SCHEMA_CASES)
def test_schema_rejects_what_validate_rejects(schema: dict[str, Any], case: Case) -> None:
    """Editors flag the same mistakes, or completion would bless a broken file."""
    validator = jsonschema.Draft202012Validator(schema)
    data = YAML(typ="safe").load(case.text)
    assert list(validator.iter_errors(data)), f"the schema accepts {case.name}"
