"""The JSON Schema and the loader agree: what an editor flags, `conveyor validate` refuses.

Each case is one value placed in a real conveyor.yaml and judged twice, by the generated
schema (jsonschema, as editors do) and by ``parse_config``; the two verdicts must match,
on both sides of every rule the schema can state (key names, relative paths, 0-100%).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
from ruamel.yaml import YAML

from conveyor.config import json_schema, parse_config
from conveyor.errors import ConfigError

TEMPLATE = """\
project: shop
rollback: {{error_rate: {error_rate}}}
services:
  {service}:
    path: {path}
    build: {{run: make, outputs: [{output}]}}
    run: python3 app.py
    config: {{{config_key}: x}}
environments:
  {env}:
    strategy: {{rolling: {{max_surge: {surge}}}}}
    services:
      {override}: {{instances: 2}}
"""
VALID = {
    "error_rate": "5%",
    "service": "catalog",
    "path": ".",
    "output": "app/",
    "config_key": "GREETING",
    "env": "staging",
    "surge": "25%",
    "override": "catalog",
}

# (field, value, valid?) -- each case changes one field of VALID
CASES: list[tuple[str, str, bool]] = [
    ("error_rate", "100%", True),
    ("error_rate", "100.0%", True),
    ("error_rate", "0.5%", True),
    ("error_rate", "007%", True),
    ("error_rate", "0.05", True),
    ("error_rate", "100.5%", False),
    ("error_rate", "150%", False),
    ("error_rate", "1000%", False),
    ("error_rate", "1.5", False),
    ("surge", "100%", True),
    ("surge", "3", True),
    ("surge", "101%", False),
    ("surge", "2.5%", False),
    ("service", "catalog-2", True),
    ("service", "Catalog", False),
    ("service", "cat_alog", False),
    ("service", "-catalog", False),
    ("env", "prod-eu", True),
    ("env", "Prod", False),
    ("config_key", "_PRIVATE", True),
    ("config_key", "2FAST", False),
    ("config_key", "MY-KEY", False),
    ("path", "services/catalog", True),
    ("path", "a/..b", True),
    ("path", "'...'", True),
    ("path", "/srv/catalog", False),
    ("path", "'~/catalog'", False),
    ("path", "..", False),
    ("path", "services/../..", False),
    ("path", "'  '", False),
    ("output", "dist/server", True),
    ("output", "/etc/app", False),
    ("output", "../app", False),
    ("output", "app/..", False),
]


@pytest.fixture(scope="module")
def validator() -> Any:
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _text(field: str, value: str) -> str:
    values = {**VALID, field: value}
    if field == "service":
        values["override"] = value  # the override must name a declared service
    return TEMPLATE.format(**values)


def _loads(text: str) -> bool:
    try:
        parse_config(text)
    except ConfigError:
        return False
    return True


def test_the_valid_document_is_valid_to_both(validator: Any) -> None:
    text = TEMPLATE.format(**VALID)
    assert _loads(text)
    assert list(validator.iter_errors(YAML(typ="safe").load(text))) == []


@pytest.mark.parametrize(("field", "value", "valid"), CASES, ids=[f"{f}={v}" for f, v, _ in CASES])
def test_schema_and_loader_agree(validator: Any, field: str, value: str, valid: bool) -> None:
    text = _text(field, value)
    errors = [e.message for e in validator.iter_errors(YAML(typ="safe").load(text))]
    assert _loads(text) is valid, text
    assert (errors == []) is valid, errors


def test_patterns_are_portable_regexes() -> None:
    """Editors run ECMA-262 regexes: Python-only syntax would break them."""
    text = str(json_schema())
    assert "(?P<" not in text and "\\Z" not in text and "\\A" not in text


# --- a standard schema --------------------------------------------------------------------

_VOCABULARY = {
    # core and applicator
    "$schema", "$id", "$ref", "$defs", "$comment", "$anchor", "$dynamicRef", "$dynamicAnchor",
    "allOf", "anyOf", "oneOf", "not", "if", "then", "else", "dependentSchemas", "prefixItems",
    "items", "contains", "properties", "patternProperties", "additionalProperties",
    "propertyNames",
    # validation
    "type", "enum", "const", "multipleOf", "maximum", "exclusiveMaximum", "minimum",
    "exclusiveMinimum", "maxLength", "minLength", "pattern", "maxItems", "minItems",
    "uniqueItems", "maxContains", "minContains", "maxProperties", "minProperties", "required",
    "dependentRequired",
    # meta-data and format
    "title", "description", "default", "deprecated", "readOnly", "writeOnly", "examples",
    "format",
}  # fmt: skip
_NAMES = {"properties", "patternProperties", "$defs", "dependentSchemas"}
_VALUES = {"default", "examples", "enum", "const"}


def _keywords(node: Any) -> set[str]:
    """Every keyword used anywhere in a schema (names of properties and values excluded)."""
    if isinstance(node, list):
        return set().union(*(_keywords(item) for item in node))
    if not isinstance(node, dict):
        return set()
    found = set(node)
    for key, value in node.items():
        if key in _NAMES:
            found |= set().union(*(_keywords(schema) for schema in value.values()))
        elif key not in _VALUES:
            found |= _keywords(value)
    return found


def test_the_schema_is_valid_2020_12_and_uses_only_its_vocabulary() -> None:
    """Editors ignore unknown keywords: a bound written as ``"ge": 1`` is never enforced."""
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert _keywords(schema) - _VOCABULARY == set()


@pytest.mark.parametrize(
    ("field", "value", "valid"),
    [
        ("count", "1", True),
        ("count", "0", False),
        ("min_sample", "0", True),
        ("min_sample", "-1", False),
    ],
)
def test_bounds_of_optional_counts_reach_the_schema(
    validator: Any, field: str, value: str, valid: bool
) -> None:
    text = TEMPLATE.format(**VALID) + (
        "analysis:\n  errors:\n    metrics:\n"
        f"      - {{name: e, provider: builtin, query: error_rate, {field}: {value},\n"
        "         interval: 1s, failure_condition: 'result > 0.01'}\n"
    )
    errors = [e.message for e in validator.iter_errors(YAML(typ="safe").load(text))]
    assert _loads(text) is valid, text
    assert (errors == []) is valid, errors


# --- the pipeline block, as an editor sees it -----------------------------------------------

PIPELINE = """\
pipeline:
  vars: {python: "3.11"}
  max_parallel: 2
  jobs:
    test:
      run: make test
      timeout: 10m
      retries: 1
      if: "branch == 'main'"
      matrix: {python: ["3.11", "3.12"]}
      env: {VERSION: "{{ vars.python }}"}
      secrets: {TOKEN: {env: CI_TOKEN}}
      cache: {key: "deps-{{ hashFiles('requirements.txt') }}", paths: [.cache/]}
      reports: {junit: [junit.xml]}
    scan: {gate: secret-scan, paths: [src/], allow: ["tests/*"]}
    package: {needs: [test, scan], build: catalog}
    staging: {needs: package, deploy: {env: staging, timeout: 30m, set: {LOG: info}}}
"""

# (name, the pipeline block, valid?) -- judged by the schema and by the loader alike
PIPELINE_CASES: list[tuple[str, str, bool]] = [
    ("complete", PIPELINE, True),
    ("needs-typo", PIPELINE.replace("needs: [test, scan]", "needz: [test, scan]"), False),
    ("bad-timeout", PIPELINE.replace("timeout: 10m", "timeout: forever"), False),
    ("gate-typo", PIPELINE.replace("gate: secret-scan", "gate: secert-scan"), False),
    ("job-name", PIPELINE.replace("    scan:", "    'scan it':"), False),
    ("absolute-report", PIPELINE.replace("junit: [junit.xml]", "junit: [/junit.xml]"), False),
    ("env-name", PIPELINE.replace("VERSION:", "1VERSION:"), False),
    ("retries", PIPELINE.replace("retries: 1", "retries: 11"), False),
    ("max-parallel", PIPELINE.replace("max_parallel: 2", "max_parallel: 0"), False),
    ("empty-run", PIPELINE.replace("run: make test", "run: []"), False),
    ("no-jobs", "pipeline: {vars: {a: b}}\n", False),
    ("number-var", PIPELINE.replace('python: "3.11"}', "python: 3.11}"), False),
]


@pytest.mark.parametrize(
    ("block", "valid"),
    [(block, valid) for _, block, valid in PIPELINE_CASES],
    ids=[name for name, _, _ in PIPELINE_CASES],
)
def test_schema_and_loader_agree_on_pipelines(validator: Any, block: str, valid: bool) -> None:
    text = TEMPLATE.format(**VALID) + block
    errors = [e.message for e in validator.iter_errors(YAML(typ="safe").load(text))]
    assert _loads(text) is valid, text
    assert (errors == []) is valid, errors


def test_a_block_extending_a_template_may_give_part_of_a_job(
    validator: Any, tmp_path: Path
) -> None:
    (tmp_path / "template.yaml").write_text("jobs:\n  test: {run: make test}\n")
    block = (
        f"pipeline:\n  extends: {tmp_path / 'template.yaml'}\n"
        "  jobs:\n    test: {timeout: 20m}\n    lint: null\n"
    )
    text = TEMPLATE.format(**VALID) + block
    assert list(validator.iter_errors(YAML(typ="safe").load(text))) == []
    config = parse_config(text)
    assert config.pipeline is not None and config.pipeline.jobs["test"].timeout == 1200.0


def test_the_schema_describes_every_pipeline_field() -> None:
    defs = json_schema()["$defs"]
    for name in ("PipelineSpec", "JobSpec", "BuildJobSpec", "DeployJobSpec", "CacheSpec"):
        for field, schema in defs[name]["properties"].items():
            assert schema.get("description"), f"{name}.{field} has no description"
    job = defs["JobSpec"]["properties"]
    assert {"type": "string"} in job["build"]["anyOf"]  # build: SERVICE
    assert {"type": "string"} in job["needs"]["anyOf"]  # needs: NAME
    assert "if" in job and "if_" not in job
    assert "secret-scan" in job["gate"]["anyOf"][0]["enum"]
    assert "extends" in defs["PipelineSpec"]["properties"]
