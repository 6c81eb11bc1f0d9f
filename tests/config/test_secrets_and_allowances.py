"""Config that may hold secrets or protected names: references, NUL, ``allow_set``.

A secret in conveyor.yaml is only ever a reference (``{secret: {env: X}}`` or
``{secret: {file: /path}}``): the models keep it apart from plain values so the plan, the
ledger and the API can show where a value comes from without holding it.
"""

from __future__ import annotations

import pytest

from conveyor.config import parse_config
from conveyor.config.schema import json_schema
from conveyor.core.model import SecretRef
from conveyor.errors import ConfigError

BASE = """\
project: shop
services:
  catalog:
    build: {{run: make, outputs: [app/]}}
    run: python3 app.py
    config:
{service_config}
environments:
  dev:
{dev}
"""


def config_text(service_config: str, dev: str = "    strategy: recreate") -> str:
    return BASE.format(service_config=service_config, dev=dev)


def problem(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "conveyor.yaml")
    return "\n".join(p.render() for p in caught.value.problems)


def test_secret_references_are_kept_apart_from_values() -> None:
    config = parse_config(
        config_text(
            "      GREETING: hello\n"
            "      DB_PASSWORD: {secret: {env: SHOP_DB_PASSWORD}}\n"
            "      TLS_KEY: {secret: {file: /run/secrets/tls.key}}",
            dev="    services:\n"
            "      catalog:\n"
            "        config:\n"
            "          GREETING: {secret: {env: DEV_GREETING}}\n"  # a value turned secret
            "          TLS_KEY: plain-in-dev",  # and a secret turned plain
        )
    )
    assert config.effective_config("catalog", "dev") == {"TLS_KEY": "plain-in-dev"}
    assert config.effective_secrets("catalog", "dev") == {
        "GREETING": SecretRef("env", "DEV_GREETING"),
        "DB_PASSWORD": SecretRef("env", "SHOP_DB_PASSWORD"),
    }


@pytest.mark.parametrize(
    ("value", "line", "needle"),
    [
        ("{secret: {env: A, file: /x}}", 7, "exactly one source, this one has both"),
        ("{secret: {}}", 7, "exactly one source, this one has neither"),
        ("{secret: {file: run/secrets/x}}", 7, "must be an absolute path"),
        ("{secret: {env: 1BAD}}", 7, "'1BAD' is not a valid environment variable name"),
        ("{secret: {vault: x}}", 7, "vault"),
        ("{secret: {env: A}, extra: 1}", 7, "extra"),
        ('"a\\0b"', 7, "cannot contain a NUL character"),
        ("[a, b]", 7, "or a secret reference"),
    ],
)
def test_bad_values_are_located_and_explained(value: str, line: int, needle: str) -> None:
    rendered = problem(config_text(f"      KEY: {value}"))
    assert f"conveyor.yaml:{line}: services.catalog.config.KEY" in rendered
    assert needle in rendered


def test_a_key_with_an_equals_sign_is_refused() -> None:
    rendered = problem(config_text('      "A=B": x'))
    assert "'A=B' is not a valid environment variable name" in rendered


def test_allow_set_names_environment_variables() -> None:
    config = parse_config(config_text("      A: b", dev="    allow_set: [PYTHONPATH, TMPDIR]"))
    assert config.environments["dev"].allow_set == ["PYTHONPATH", "TMPDIR"]
    assert parse_config(config_text("      A: b")).environments["dev"].allow_set == []
    assert "is not a valid environment variable name" in problem(
        config_text("      A: b", dev="    allow_set: [LD=X]")
    )


def test_json_schema_describes_secret_references() -> None:
    schema = json_schema()
    value = schema["$defs"]["ServiceConfig"]["properties"]["config"]["additionalProperties"]
    secret = value["anyOf"][1]["properties"]["secret"]
    assert set(secret["properties"]) == {"env", "file"}
    assert schema["$defs"]["EnvironmentConfig"]["properties"]["allow_set"]["type"] == "array"
