"""How the config models become the JSON Schema editors check conveyor.yaml against.

pydantic's generator describes the Python types; editors need to refuse what ``conveyor
validate`` refuses, or completion blesses a broken file. Two gaps are closed here, for every
model at once rather than field by field:

- a dict keyed by a patterned name (``services: dict[Slug, ...]``) comes out as
  ``patternProperties``, which lets a key that misses the pattern through unchecked; it is
  rewritten as ``propertyNames`` (the rule for keys) plus ``additionalProperties`` (the
  schema for values), so ``Catalog_Svc:`` is flagged.
- the percentage patterns of ``durations`` describe the syntax (``5%``) but not the range
  the parsers enforce; JSON Schema can only state "at most 100%" as a regex, so those
  patterns are narrowed to 0-100% in the finished schema.
- a bound pydantic cannot attach to the number itself (``Field(ge=1)`` on an optional
  ``Count``, whose validator runs first) comes out under its Python name (``"ge": 1``),
  which JSON Schema ignores; such bounds are renamed to ``minimum`` and its siblings, so
  editors enforce them and the schema uses the standard vocabulary only (a test checks it).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaMode, JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

from conveyor.config.durations import PERCENT_PATTERN, WHOLE_PERCENT_PATTERN

PERCENT_UP_TO_100_PATTERN = r"^0*(?:100(?:\.0+)?|\d{1,2}(?:\.\d+)?)\s*%$"
"""``PERCENT_PATTERN`` limited to 0-100%, as ``parse_percentage`` accepts."""
WHOLE_PERCENT_UP_TO_100_PATTERN = r"^0*(?:100|\d{1,2})\s*%$"
"""``WHOLE_PERCENT_PATTERN`` limited to 0-100%, as ``parse_int_or_percent`` accepts."""

_STANDARD_BOUNDS = {
    "ge": "minimum",
    "gt": "exclusiveMinimum",
    "le": "maximum",
    "lt": "exclusiveMaximum",
}
_SCHEMA_MAPS = frozenset({"properties", "patternProperties", "$defs", "dependentSchemas"})
"""Keywords whose value maps names to schemas: their keys are names, never keywords."""

_BOUNDED_PATTERNS = {
    PERCENT_PATTERN: PERCENT_UP_TO_100_PATTERN,
    WHOLE_PERCENT_PATTERN: WHOLE_PERCENT_UP_TO_100_PATTERN,
}


class ConveyorJsonSchema(GenerateJsonSchema):
    """pydantic's generator, with dict key names and percentage ranges enforced."""

    def generate(self, schema: CoreSchema, mode: JsonSchemaMode = "validation") -> JsonSchemaValue:
        result: JsonSchemaValue = _standard_bounds(
            _bound_percentages(super().generate(schema, mode))
        )
        return result

    def dict_schema(self, schema: core_schema.DictSchema) -> JsonSchemaValue:
        result = super().dict_schema(schema)
        patterns = result.get("patternProperties")
        if isinstance(patterns, dict) and len(patterns) == 1 and "propertyNames" not in result:
            [(pattern, values)] = patterns.items()
            del result["patternProperties"]
            result["propertyNames"] = {"pattern": pattern}
            result["additionalProperties"] = values
        return result


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A model's JSON Schema, generated the Conveyor way."""
    return model.model_json_schema(mode="validation", schema_generator=ConveyorJsonSchema)


def embedded_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A model's schema with its `$defs` inlined and no title, to embed in another schema."""
    schema = inline_refs(model_schema(model))
    schema.pop("title", None)
    return schema


def inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """Inline a model schema's `$defs` so it can be embedded anywhere (ours are not recursive)."""
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return walk(defs[ref.removeprefix("#/$defs/")])
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    result: dict[str, Any] = walk(schema)
    return result


def _bound_percentages(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            key: _BOUNDED_PATTERNS.get(value, value)
            if key == "pattern" and isinstance(value, str)
            else _bound_percentages(value)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_bound_percentages(item) for item in node]
    return node


def _standard_bounds(node: Any) -> Any:
    """Rename pydantic's ``ge``/``gt``/``le``/``lt`` keywords to JSON Schema's."""
    if isinstance(node, list):
        return [_standard_bounds(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: _standard_bounds(schema) for name, schema in value.items()}
        elif key in _STANDARD_BOUNDS and isinstance(value, int | float):
            out[_STANDARD_BOUNDS[key]] = value
        elif key in ("default", "examples", "const", "enum"):
            out[key] = value  # values, not schemas
        else:
            out[key] = _standard_bounds(value)
    return out
