"""The JSON Schema and the loader agree: what an editor flags, `conveyor validate` refuses.

Each case is one value placed in a real conveyor.yaml and judged twice, by the generated
schema (jsonschema, as editors do) and by ``parse_config``; the two verdicts must match,
on both sides of every rule the schema can state (key names, relative paths, 0-100%).
"""

from __future__ import annotations

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
