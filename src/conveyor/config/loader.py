"""Read conveyor.yaml into a ``ProjectConfig``, or explain precisely what is wrong with it.

This module is the boundary between user-written text and the typed config: every YAML or
pydantic failure is translated here into ``ConfigProblem``s that carry the file, the 1-based
line, the dotted field path and a hint, and all of them are reported at once. Nothing that
a user can type may escape as another exception.

The text is read by ``source.read_yaml`` into values that remember their file and line; the
pipeline's ``extends:`` templates are merged in (``extends.py``), each value keeping its
origin, so the whole of conveyor.yaml, pipeline included, is validated in one pass against
``ProjectConfig``. A pydantic error location is then walked against the data (skipping
pydantic's internal union tags) to find the deepest part of it that exists, which gives the
file and line, and the model classes are walked along the same location to name the
allowed fields, ranges and examples.
"""

from __future__ import annotations

import math
import re
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeGuard, Union, get_args, get_origin

from pydantic import BaseModel, Tag, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails, InitErrorDetails

from conveyor.config.extends import resolve_pipeline
from conveyor.config.flags import flag_problems, merge_flag_files
from conveyor.config.schema import ProjectConfig, reference_errors
from conveyor.config.source import DataPath, Origin, file_problem, read_yaml
from conveyor.config.suggest import (
    ERROR_TYPE,
    HINT_KEY,
    choose_hint,
    closest,
    describe,
    flow,
    invalid,
)
from conveyor.errors import ConfigError, ConfigProblem
from conveyor.layout import CONFIG_NAMES, find_config

_START = "start with 'project: NAME', then 'services:' and 'environments:'"


@dataclass(frozen=True)
class LoadedProject:
    """A validated config and where it came from; paths in it are relative to ``root``."""

    config: ProjectConfig
    file: Path
    root: Path


def load_project(path: Path) -> LoadedProject:
    """Load and validate a project from its conveyor.yaml or the directory holding it."""
    file = find_config(path).resolve()
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            [file_problem(file, f"cannot read the file: {exc}", "check it is readable UTF-8")]
        ) from None
    return LoadedProject(config=parse_config(text, str(file)), file=file, root=file.parent)


def parse_config(text: str, file: str = CONFIG_NAMES[0]) -> ProjectConfig:
    """Validate conveyor.yaml text; ``file`` labels the problems and anchors ``extends:``.

    A relative ``pipeline.extends`` resolves against the directory of ``file``, which must
    then be an absolute path (``load_project`` passes one). Given a mere label such as the
    default, the text may only extend absolute paths: guessing a directory (the current
    one, say) would make the same text mean different pipelines in different processes.
    """
    document = read_yaml(text, file)
    if document.value is None:
        raise ConfigError([file_problem(file, "the file is empty", _START)])
    if document.entries() is None:
        raise ConfigError(
            [
                ConfigProblem(
                    file=file,
                    line=1,
                    field="(file)",
                    message=f"expected a mapping of fields at the top level, got "
                    f"{describe(document.plain())}",
                    hint=_START,
                )
            ]
        )
    document, problems = resolve_pipeline(document, file)
    document, flag_file_problems = merge_flag_files(document, file)
    problems += flag_file_problems
    data = document.plain()
    assert isinstance(data, dict)
    origins = document.origins()
    try:
        config = ProjectConfig.model_validate(data)
        errors = _raw_slo_errors(data)
    except ValidationError as exc:
        errors = [*exc.errors(), *_raw_reference_errors(data), *_raw_slo_errors(data)]
    if errors:
        origins = document.origins()
        problems += {_problem(error, data, origins) for error in errors}
    envs = data.get("environments")
    problems += flag_problems(data, origins, set(envs) if isinstance(envs, dict) else set())
    if problems:
        raise ConfigError(sorted(set(problems), key=_reading_order(file)))
    return config


def _raw_reference_errors(data: dict[str, object]) -> list[ErrorDetails]:
    """Cross-reference errors found on the raw document, see ``environments.reference_errors``."""
    services, environments = data.get("services"), data.get("environments")
    if not isinstance(services, dict) or not isinstance(environments, dict):
        return []
    overrides: list[tuple[str, str, int | None]] = []
    for env_name, env in environments.items():
        blocks = env.get("services") if isinstance(env, dict) else None
        for name, block in blocks.items() if isinstance(blocks, dict) else ():
            port = block.get("port") if isinstance(block, dict) else None
            valid = isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536
            overrides.append((env_name, name, port if valid else None))
    problems = reference_errors(services, overrides)
    if not problems:
        return []
    errors = ValidationError.from_exception_data("environments", problems).errors()
    return [{**error, "loc": ("environments", *error["loc"])} for error in errors]


def _raw_slo_errors(data: dict[str, object]) -> list[ErrorDetails]:
    """SLOs name environments that exist, and no two SLOs of a service share a name."""
    services, environments = data.get("services"), data.get("environments")
    if not isinstance(services, dict) or not isinstance(environments, dict):
        return []
    problems: list[InitErrorDetails] = []
    for name, service in services.items():
        slos = service.get("slos") if isinstance(service, dict) else None
        seen: set[object] = set()
        for index, slo in enumerate(slos if isinstance(slos, list) else ()):
            if not isinstance(slo, dict):
                continue
            if slo.get("name") in seen:
                problems.append(
                    InitErrorDetails(
                        type=invalid(
                            f"service '{name}' has two SLOs named {slo.get('name')!r}",
                            "give each SLO of a service its own name",
                        ),
                        loc=(name, "slos", index, "name"),
                        input=slo.get("name"),
                    )
                )
            seen.add(slo.get("name"))
            envs = slo.get("environments", ["production"])
            for position, env in enumerate(envs if isinstance(envs, list) else ()):
                if isinstance(env, str) and env not in environments:
                    where: tuple[str | int, ...] = (name, "slos", index, "environments", position)
                    problems.append(
                        InitErrorDetails(
                            type=invalid(
                                f"SLO '{slo.get('name')}' of service '{name}' applies to "
                                f"unknown environment '{env}'",
                                choose_hint(env, list(environments), "environments")
                                or "name environments declared under environments:",
                            ),
                            loc=where if "environments" in slo else where[:4],
                            input=env,
                        )
                    )
    if not problems:
        return []
    errors = ValidationError.from_exception_data("services", problems).errors()
    return [{**error, "loc": ("services", *error["loc"])} for error in errors]


def _reading_order(file: str) -> Callable[[ConfigProblem], tuple[bool, str, int, str]]:
    """conveyor.yaml's problems first, by line; then each template's, by file and line."""

    def key(problem: ConfigProblem) -> tuple[bool, str, int, str]:
        line = problem.line if problem.line is not None else 0
        return (problem.file != file, problem.file, line, problem.field)

    return key


# --- pydantic error -> ConfigProblem -----------------------------------------------------


def _problem(error: ErrorDetails, data: object, origins: dict[DataPath, Origin]) -> ConfigProblem:
    loc = tuple(error["loc"])
    found = _existing_path(loc, data)
    shown: DataPath = (*found, loc[-1]) if error["type"] == "missing" and loc else found
    message, hint = _wording(error, loc)
    origin = origins.get(found, origins[()])
    return ConfigProblem(
        file=origin.file,
        line=origin.line,
        field=_dotted(shown) or "(top level)",
        message=message,
        hint=hint,
    )


def _existing_path(loc: DataPath, data: object) -> DataPath:
    """The longest part of a pydantic location that exists in the data, tags skipped."""
    found: list[str | int] = []
    node = data
    for part in loc:
        in_dict = isinstance(node, dict) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if not (in_dict or in_list):
            continue
        node = node[part]  # type: ignore[index]
        found.append(part)
    return tuple(found)


def _dotted(path: DataPath) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


_TYPE_WORDS = {
    "string_type": "expected text",
    "int_type": "expected a whole number",
    "int_parsing": "expected a whole number",
    "int_from_float": "expected a whole number",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "list_type": "expected a list",
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping of fields",
    "model_attributes_type": "expected a mapping of fields",
}
_BOUNDS = {
    "greater_than_equal": ("ge", "must be at least"),
    "greater_than": ("gt", "must be more than"),
    "less_than_equal": ("le", "must be at most"),
    "less_than": ("lt", "must be less than"),
}


def _wording(error: ErrorDetails, loc: DataPath) -> tuple[str, str | None]:
    kind = error["type"]
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    value = error.get("input")
    name = str(loc[-1]) if loc else ""
    owner = _owner(loc)
    if kind == ERROR_TYPE:
        hint = ctx.get(HINT_KEY)
        return error["msg"], str(hint) if hint is not None else _number_hint(owner, name, ctx)
    if kind == "extra_forbidden":
        return f"unknown field '{name}'", _unknown_field_hint(owner, name)
    if kind == "missing":
        about = _description(owner, name)
        return f"missing required field '{name}'", f"add '{name}:'" + (
            f" ({about})" if about else ""
        )
    if kind in _TYPE_WORDS:
        hint = None
        fields = _fields(_model(loc))
        if fields and kind in ("model_type", "model_attributes_type", "dict_type"):
            hint = f"indent its fields under the key; it takes: {', '.join(fields)}"
        elif kind == "list_type":
            hint = _list_hint(name, value)
        elif kind == "string_type" and isinstance(value, int | float | bool):
            hint = f'quote it to keep it text, e.g. {name}: "{flow(value)}"'
        hint = hint or _number_hint(owner, name, ctx)
        if hint is None and (example := _example(owner, name)) is not None:
            hint = f"e.g. {name}: {example}"
        return f"{_TYPE_WORDS[kind]}, got {describe(value)}", hint
    if kind in _BOUNDS:
        key, words = _BOUNDS[kind]
        return f"{words} {ctx.get(key)}, got {describe(value)}", _number_hint(owner, name, ctx)
    if kind == "string_pattern_mismatch":
        about = _description(owner, name)
        example = _example(owner, name)
        hint = f"{name}: {about}" if about else f"match the pattern {ctx.get('pattern')}"
        if example is not None:
            hint += f", e.g. {name}: {example}"
        return f"{describe(value)} does not match the pattern {ctx.get('pattern')}", hint
    if kind == "too_short":
        about = _description(owner, name)
        return "must not be empty", "add at least one entry" + (f" ({about})" if about else "")
    if kind == "literal_error":
        choices = _quoted(str(ctx.get("expected", "")))
        return f"unsupported {name} {describe(value)}", choose_hint(str(value), choices, "values")
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        tags = _quoted(str(ctx.get("expected_tags", "")))
        tag = str(ctx.get("tag", ""))
        return f"unknown kind {describe(tag)}", choose_hint(tag, tags, "kinds")
    return str(error["msg"]), None


def _list_hint(name: str, value: object) -> str:
    """A scalar where a list belongs is nearly always one entry: show it in brackets."""
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return f"write it as a list, e.g. {name}: [{value}]"
    return f"write it as a list: {name}: [a, b], or one '- entry' line each under '{name}:'"


def _number_hint(model: type[BaseModel] | None, name: str, ctx: Mapping[str, Any]) -> str | None:
    """``use a whole number from 1 to 65535, e.g. port: 18080``, for a numeric field.

    The range comes from the field's declared constraints rather than from the error, which
    names only the bound that was broken: a user fixing ``port: 70000`` should learn both
    ends. The error's own bound is kept for locations the model walk cannot follow. The
    example is the field's first ``examples`` entry, else its default, else its lowest
    allowed whole number. None for fields that are not numbers.
    """
    field = _field(model, name)
    bounds: dict[str, float] = {}
    types_seen: set[type] = set()
    if field is not None:
        _collect_numeric(field.annotation, field.metadata, bounds, types_seen)
    for key in _RANGE_WORDS:
        if _is_number(ctx.get(key)):
            bounds.setdefault(key, ctx[key])
    if not types_seen and not bounds:
        return None
    whole = int in types_seen and float not in types_seen
    text = f"use {'a whole number' if whole else 'a number'}{_range_words(bounds)}"
    candidates = [*(field.examples or []), field.default] if field is not None else []
    if whole:
        lowest = bounds["ge"] if "ge" in bounds else bounds.get("gt", -1) + 1
        candidates.append(math.ceil(lowest))
    example = next((c for c in candidates if _is_number(c) and _allows(bounds, c)), None)
    return text + (f", e.g. {name}: {_number_text(example)}" if example is not None else "")


_RANGE_WORDS = {"ge": "at least", "gt": "more than", "le": "at most", "lt": "less than"}
"""Read after "a number of": ``of at least 1``, ``of more than 0 and less than 0.5``."""


def _collect_numeric(
    annotation: Any, metadata: Sequence[Any], bounds: dict[str, float], types_seen: set[type]
) -> None:
    """Bounds (``ge``/``gt``/``le``/``lt``) and number types in an annotation and its metadata.

    Constraints live either on the field (``Field(1, ge=1)``) or inside a reused
    ``Annotated`` alias (``Port | None``), so both are searched; ``bool`` is not a number here.
    """
    pending, extra = [annotation], list(metadata)
    while pending:
        current = pending.pop()
        origin = get_origin(current)
        if origin is Annotated:
            pending.append(get_args(current)[0])
            extra.extend(get_args(current)[1:])
        elif origin in (Union, types.UnionType):
            pending.extend(get_args(current))
        elif current in (int, float):
            types_seen.add(current)
    for item in extra:
        for constraint in [item, *getattr(item, "metadata", [])]:
            for key in _RANGE_WORDS:
                if _is_number(value := getattr(constraint, key, None)):
                    bounds.setdefault(key, value)


def _range_words(bounds: Mapping[str, float]) -> str:
    if "ge" in bounds and "le" in bounds:
        return f" from {_number_text(bounds['ge'])} to {_number_text(bounds['le'])}"
    words = [f"{_RANGE_WORDS[k]} {_number_text(bounds[k])}" for k in _RANGE_WORDS if k in bounds]
    return " of " + " and ".join(words) if words else ""


def _allows(bounds: Mapping[str, float], value: float) -> bool:
    return (
        value >= bounds.get("ge", -math.inf)
        and value > bounds.get("gt", -math.inf)
        and value <= bounds.get("le", math.inf)
        and value < bounds.get("lt", math.inf)
    )


def _is_number(value: object) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _number_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _unknown_field_hint(owner: type[BaseModel] | None, name: str) -> str:
    """``did you mean 'needs'? e.g. needs: [build]; allowed fields: ...`` for a typo."""
    allowed = _fields(owner)
    if not allowed:
        return "remove it"
    hint = choose_hint(name, allowed, "fields").replace("known fields", "allowed fields")
    meant = closest(name, allowed)
    example = _example(owner, meant) if meant is not None else None
    if example is not None:
        hint = hint.replace("? allowed fields", f"? e.g. {meant}: {example}; allowed fields", 1)
    return hint


def _example(model: type[BaseModel] | None, name: str) -> str | None:
    """A field's first declared example, as it is written in YAML."""
    field = _field(model, name)
    examples = field.examples if field is not None else None
    return flow(examples[0]) if examples else None


def _quoted(text: str) -> list[str]:
    return re.findall(r"'([^']*)'", text)


def _description(model: type[BaseModel] | None, name: str) -> str | None:
    field = _field(model, name)
    description = field.description if field is not None else None
    return description.rstrip(".") if description else None


def _field(model: type[BaseModel] | None, name: str) -> FieldInfo | None:
    """The field a YAML key names: by its alias (``if``) or, failing that, its name."""
    if model is None:
        return None
    for field in model.model_fields.values():
        if field.alias == name:
            return field
    return model.model_fields.get(name)


def _fields(model: type[BaseModel] | None) -> list[str]:
    """The keys a model accepts, as users write them (aliases, not Python names)."""
    if model is None:
        return []
    written = [field.alias or name for name, field in model.model_fields.items() if name != "kind"]
    return [*getattr(model, "RESOLVED_KEYS", ()), *written]


def _owner(loc: DataPath) -> type[BaseModel] | None:
    """The model class that declares the last field of ``loc``."""
    return _model(loc[:-1])


def _model(loc: DataPath) -> type[BaseModel] | None:
    """The model class found at ``loc``, following fields, dict values, list items, tags."""
    annotation: Any = ProjectConfig
    for part in loc:
        annotation = _step(annotation, part)
        if annotation is None:
            return None
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _step(annotation: Any, part: str | int) -> Any:
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        field = _field(annotation, str(part))
        return field.annotation if field is not None else None
    origin = get_origin(annotation)
    if origin is dict:
        return get_args(annotation)[1]
    if origin is list:
        return get_args(annotation)[0]
    if origin in (Union, types.UnionType):
        for member in get_args(annotation):
            kind = getattr(member, "model_fields", {}).get("kind")
            if kind is not None and kind.default == part:
                return member
            tags = get_args(member)[1:] if get_origin(member) is Annotated else ()
            if any(isinstance(tag, Tag) and tag.tag == part for tag in tags):
                return member
    return None


def _unwrap(annotation: Any) -> Any:
    """Strip ``Annotated`` and ``Optional`` until a model, a container or a real union remains."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
            continue
        if origin in (Union, types.UnionType):
            members = [arg for arg in get_args(annotation) if arg is not type(None)]
            if len(members) == 1:
                annotation = members[0]
                continue
        return annotation
