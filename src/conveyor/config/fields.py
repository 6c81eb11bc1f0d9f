"""The building blocks of conveyor.yaml's models: the frozen base and the field types they share.

Each type validates with a message a user can act on and carries the JSON Schema editors
check the same rule with: names (``Slug``), paths, commands, ports, and config values, which
are plain scalars or references to a secret the server reads when an instance starts.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    WithJsonSchema,
    model_validator,
)

from conveyor.config.durations import reject_bool
from conveyor.config.names import ENV_VAR_PATTERN, EnvVar
from conveyor.config.suggest import describe, invalid
from conveyor.core.model import SecretRef

SLUG_PATTERN = r"^[a-z0-9][a-z0-9-]*$"
RELATIVE_PATH_PATTERN = r"^(?![/~])(?![\s\S]*(?:^|/)\.\.(?:/|$))[\s\S]*\S"
"""What ``_relative_path`` accepts: not blank, no leading '/' or '~', no '..' segment."""


def _slug(value: str) -> str:
    if not re.fullmatch(SLUG_PATTERN, value):
        raise invalid(
            f"{describe(value)} is not a valid name",
            "use lowercase letters, digits and '-', starting with a letter or digit",
        )
    return value


def _relative_path(value: str) -> str:
    path = PurePosixPath(value)
    if not value.strip():
        raise invalid("a path cannot be empty", "use '.' for the service directory itself")
    if path.is_absolute() or value.startswith("~"):
        raise invalid(
            f"path {describe(value)} must be relative",
            "paths are relative to the service directory, e.g. app/ or dist/server",
        )
    if ".." in path.parts:
        raise invalid(
            f"path {describe(value)} must not leave its directory ('..')",
            "keep build inputs and outputs inside the service directory",
        )
    return value


def _http_path(value: str) -> str:
    if not value.startswith("/") or any(c.isspace() for c in value):
        raise invalid(
            f"{describe(value)} is not an HTTP path", "start it with '/', e.g. /health/ready"
        )
    return value


def _command(value: object) -> str | list[str]:
    hint = (
        'write a shell command such as "python3 app.py" or an argv list such as [python3, app.py]'
    )
    if isinstance(value, str):
        if value.strip():
            return value
        raise invalid("the command is empty", hint)
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return list(value)
    raise invalid(
        f"expected a command (a string or a list of strings), got {describe(value)}", hint
    )


Slug = Annotated[
    str,
    AfterValidator(_slug),
    WithJsonSchema({"type": "string", "pattern": SLUG_PATTERN}),
]
RelativePath = Annotated[
    str,
    AfterValidator(_relative_path),
    WithJsonSchema({"type": "string", "pattern": RELATIVE_PATH_PATTERN}),
]
HttpPath = Annotated[
    str, AfterValidator(_http_path), WithJsonSchema({"type": "string", "pattern": "^/"})
]
Command = Annotated[
    str | list[str],
    BeforeValidator(_command),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "minLength": 1},
                {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1},
            ]
        }
    ),
]


class ConfigModel(BaseModel):
    """Every model of conveyor.yaml: an unknown key is a mistake; a loaded config never changes."""

    model_config = ConfigDict(extra="forbid", frozen=True)


Port = Annotated[int, Field(ge=1, le=65535), BeforeValidator(reject_bool)]
Replicas = Annotated[int, Field(ge=1), BeforeValidator(reject_bool)]


def _scalar(value: object) -> object:
    if isinstance(value, str):
        if "\x00" in value:
            # The process environment is a list of NUL-terminated NAME=VALUE strings: a NUL
            # would cut the value short, or make starting the instance fail.
            raise invalid(
                "a config value cannot contain a NUL character",
                "remove it; an environment variable holds text without NUL",
            )
        return value
    if isinstance(value, int | float | bool):
        return value
    raise invalid(
        f"config values must be a string, number, true/false or a secret reference, "
        f"got {describe(value)}",
        'quote the value to pass it as text, e.g. KEY: "" for an empty value; a secret is '
        "written KEY: {secret: {env: VARIABLE}} or KEY: {secret: {file: /run/secrets/key}}",
    )


def _absolute_file(value: str) -> str:
    if not value.startswith("/") or "\x00" in value:
        raise invalid(
            f"secret file {describe(value)} must be an absolute path",
            "the server reads it when an instance starts, e.g. /run/secrets/db-password",
        )
    return value


class SecretSourceConfig(ConfigModel):
    """Where the server reads a secret when an instance starts: exactly one of env or file."""

    env: EnvVar | None = Field(
        None,
        description="A variable of the server's own environment (where `conveyor server` or "
        "`conveyor up` was started) that holds the value.",
        examples=["SHOP_DB_PASSWORD"],
    )
    file: Annotated[str, AfterValidator(_absolute_file)] | None = Field(
        None,
        description="An absolute path whose content (without its final newline) is the value.",
        examples=["/run/secrets/db-password"],
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretSourceConfig:
        if (self.env is None) == (self.file is None):
            both = "both" if self.env is not None else "neither"
            raise invalid(
                f"a secret names exactly one source, this one has {both}",
                "write {secret: {env: SHOP_DB_PASSWORD}} or {secret: {file: /run/secrets/db}}",
            )
        return self

    def reference(self) -> SecretRef:
        if self.env is not None:
            return SecretRef("env", self.env)
        assert self.file is not None
        return SecretRef("file", self.file)


class SecretConfig(ConfigModel):
    """A config value that is a secret: stored and shown as this reference, never as a value."""

    secret: SecretSourceConfig = Field(description="Where the value is read when it is needed.")


ConfigScalar = str | int | float | bool


def _config_value_tag(value: object) -> str:
    if isinstance(value, SecretConfig) or (isinstance(value, dict) and "secret" in value):
        return "secret"
    return "scalar"


ConfigValue = Annotated[
    Annotated[
        Annotated[ConfigScalar, BeforeValidator(_scalar)],
        Tag("scalar"),
    ]
    | Annotated[SecretConfig, Tag("secret")],
    Discriminator(_config_value_tag),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": ["string", "number", "boolean"]},
                {
                    "type": "object",
                    "properties": {
                        "secret": {
                            "type": "object",
                            "properties": {
                                "env": {"type": "string", "pattern": ENV_VAR_PATTERN},
                                "file": {"type": "string", "pattern": "^/"},
                            },
                            "additionalProperties": False,
                            "minProperties": 1,
                            "maxProperties": 1,
                        }
                    },
                    "required": ["secret"],
                    "additionalProperties": False,
                },
            ]
        }
    ),
]
