"""Read conveyor.yaml into a ``ProjectConfig``, or explain precisely what is wrong with it.

This module is the boundary between user-written text and the typed config: every YAML or
pydantic failure is translated here into ``ConfigProblem``s that carry the file, the 1-based
line, the dotted field path and a hint, and all of them are reported at once. Nothing that
a user can type may escape as another exception.

Line numbers come from ruamel.yaml's round-trip loader, which remembers where each key and
list item was. The document is first copied into plain Python values alongside a map from
data path to line; a pydantic error location is then walked against the data (skipping
pydantic's internal union tags) to find the deepest part of it that exists in the file, and
the model classes are walked along the same location to name the allowed fields.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import types
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeGuard, Union, get_args, get_origin

from pydantic import BaseModel, Tag, ValidationError
from pydantic_core import ErrorDetails
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedSeq, TaggedScalar
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from conveyor.config.schema import ProjectConfig, reference_errors
from conveyor.config.suggest import ERROR_TYPE, HINT_KEY, choose_hint, describe
from conveyor.errors import ConfigError, ConfigProblem

CONFIG_NAMES = ("conveyor.yaml", "conveyor.yml")
_MAX_NODES = 100_000
_MAX_DEPTH = 64

DataPath = tuple[str | int, ...]


@dataclass(frozen=True)
class LoadedProject:
    """A validated config and where it came from; paths in it are relative to ``root``."""

    config: ProjectConfig
    file: Path
    root: Path


def find_config(start: Path) -> Path:
    """The conveyor.yaml (or conveyor.yml) in ``start``; a file path is returned as is."""
    if start.is_file():
        return start
    for name in CONFIG_NAMES:
        candidate = start / name
        if candidate.is_file():
            return candidate
    where = "no such directory" if not start.exists() else f"no {CONFIG_NAMES[0]} in {start}"
    raise ConfigError(
        [
            ConfigProblem(
                file=str(start / CONFIG_NAMES[0]),
                line=None,
                field="(file)",
                message=where,
                hint="run inside a project or pass -C DIR",
            )
        ]
    )


def load_project(path: Path) -> LoadedProject:
    """Load and validate a project from its conveyor.yaml or the directory holding it."""
    file = find_config(path).resolve()
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            [_file_problem(file, f"cannot read the file: {exc}", "check it is readable UTF-8")]
        ) from None
    return LoadedProject(config=parse_config(text, str(file)), file=file, root=file.parent)


def parse_config(text: str, file: str = CONFIG_NAMES[0]) -> ProjectConfig:
    """Validate conveyor.yaml text; ``file`` only labels the problems."""
    data, lines = _read_yaml(text, file)
    if data is None:
        raise ConfigError(
            [
                _file_problem(
                    file,
                    "the file is empty",
                    "start with 'project: NAME', then 'services:' and 'environments:'",
                )
            ]
        )
    if not isinstance(data, dict):
        raise ConfigError(
            [
                ConfigProblem(
                    file=file,
                    line=1,
                    field="(file)",
                    message=f"expected a mapping of fields at the top level, got {describe(data)}",
                    hint="start with 'project: NAME', then 'services:' and 'environments:'",
                )
            ]
        )
    try:
        return ProjectConfig.model_validate(data)
    except ValidationError as exc:
        errors = [*exc.errors(), *_raw_reference_errors(data)]
        problems = {_problem(error, data, lines, file) for error in errors}
        raise ConfigError(sorted(problems, key=_reading_order)) from None


def _raw_reference_errors(data: dict[str, object]) -> list[ErrorDetails]:
    """Cross-reference errors found on the raw document, see ``schema.reference_errors``."""
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


def _reading_order(problem: ConfigProblem) -> tuple[int, str]:
    return (problem.line if problem.line is not None else 0, problem.field)


def _file_problem(file: str | Path, message: str, hint: str) -> ConfigProblem:
    return ConfigProblem(file=str(file), line=None, field="(file)", message=message, hint=hint)


# --- YAML -> plain data with lines ---------------------------------------------------------


def _read_yaml(text: str, file: str) -> tuple[object, dict[DataPath, int]]:
    yaml = YAML(typ="rt")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ruamel warns on e.g. reused anchors: not our call
            document = yaml.load(text)
    except YAMLError as exc:
        raise ConfigError([_yaml_problem(exc, file)]) from None
    except RecursionError:
        raise ConfigError(
            [_file_problem(file, "the YAML is nested too deeply", _NESTING)]
        ) from None
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        # ruamel's constructors raise bare Python errors for some tagged values (!!int x).
        raise ConfigError(
            [_file_problem(file, f"invalid YAML value: {exc}", "check explicit !!tags")]
        ) from None
    lines: dict[DataPath, int] = {(): (_line_of(document) or 0) + 1}
    try:
        data = _Plain(lines).convert(document, (), 0)
    except _TooComplex as exc:
        raise ConfigError([_file_problem(file, str(exc), _NESTING)]) from None
    return data, lines


_NESTING = "a conveyor.yaml is a few levels deep; check for runaway anchors or brackets"


class _TooComplex(Exception):
    pass


class _Plain:
    """Copies ruamel's round-trip nodes into dict/list/str/int/float/bool, recording lines.

    Aliases are copied, not shared, so a node counter bounds the work an alias bomb can
    cause, and a depth limit stops a recursive alias (ruamel currently breaks those itself).
    """

    def __init__(self, lines: dict[DataPath, int]) -> None:
        self.lines = lines
        self.nodes = 0

    def convert(self, node: object, path: DataPath, depth: int) -> object:
        self.nodes += 1
        if self.nodes > _MAX_NODES or depth > _MAX_DEPTH:
            raise _TooComplex("the YAML document is too large or too deeply nested")
        if isinstance(node, Mapping):
            return self._mapping(node, path, depth)
        if isinstance(node, CommentedSeq | list | set | tuple):
            return self._sequence(list(node), node, path, depth)
        return _scalar(node)

    def _mapping(self, node: Mapping[Any, Any], path: DataPath, depth: int) -> dict[str, object]:
        out: dict[str, object] = {}
        parent_line = self.lines.get(path, 1)
        for raw_key, value in node.items():
            key = _key_text(raw_key)
            line = _position(node, raw_key)
            self.lines[(*path, key)] = line + 1 if line is not None else parent_line
            out[key] = self.convert(value, (*path, key), depth + 1)
        return out

    def _sequence(self, items: list[Any], node: object, path: DataPath, depth: int) -> list[object]:
        out: list[object] = []
        parent_line = self.lines.get(path, 1)
        for index, value in enumerate(items):
            line = _position(node, index)
            self.lines[(*path, index)] = line + 1 if line is not None else parent_line
            out.append(self.convert(value, (*path, index), depth + 1))
        return out


def _line_of(node: object) -> int | None:
    lc = getattr(node, "lc", None)
    line = getattr(lc, "line", None)
    return line if isinstance(line, int) else None


def _position(node: object, key: object) -> int | None:
    """0-based line of a key or item; None for merged keys, which have no place of their own."""
    lc = getattr(node, "lc", None)
    data = getattr(lc, "data", None)
    if not isinstance(data, dict) or key not in data:
        return None
    line = data[key][0]
    return line if isinstance(line, int) else None


def _key_text(key: object) -> str:
    if isinstance(key, str):
        return str(key)
    if isinstance(key, bool):
        return "true" if key else "false"
    if key is None:
        return "null"
    return str(_scalar(key))


def _scalar(value: object) -> object:
    """Plain Python values, so pydantic never sees ruamel's str/int/float subclasses."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, dt.date):
        return value.isoformat()  # an unquoted 2024-01-01 most likely meant the text
    if isinstance(value, TaggedScalar):
        return str(value.value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _yaml_problem(exc: YAMLError, file: str) -> ConfigProblem:
    if not isinstance(exc, MarkedYAMLError):
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return _file_problem(
            file, f"invalid YAML: {message}", "save the file as UTF-8 text without control bytes"
        )
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark is not None else None
    column = mark.column + 1 if mark is not None else None
    problem = exc.problem or "syntax error"
    duplicate = re.match(r'found duplicate key "(.*?)"', problem)
    if duplicate:
        key = duplicate.group(1)
        return ConfigProblem(
            file=file,
            line=line,
            field=key,
            message=f"duplicate key '{key}'",
            hint=f"each key may appear once per mapping: merge or remove one of the '{key}' keys",
            column=column,
        )
    if "'\\t'" in problem:
        hint = "indent with spaces: YAML does not allow tab characters for indentation"
    else:
        hint = "check the indentation, colons and quotes on this line and the one before"
    context = f" ({exc.context})" if exc.context else ""
    return ConfigProblem(
        file=file,
        line=line,
        field="(yaml)",
        message=f"invalid YAML: {problem}{context}",
        hint=hint,
        column=column,
    )


# --- pydantic error -> ConfigProblem -----------------------------------------------------


def _problem(
    error: ErrorDetails, data: object, lines: dict[DataPath, int], file: str
) -> ConfigProblem:
    loc = tuple(error["loc"])
    found = _existing_path(loc, data)
    shown: DataPath = (*found, loc[-1]) if error["type"] == "missing" and loc else found
    message, hint = _wording(error, loc)
    return ConfigProblem(
        file=file,
        line=lines.get(found, lines[()]),
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
        allowed = _fields(owner)
        return f"unknown field '{name}'", _unknown_field_hint(name, allowed)
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
        return f"{_TYPE_WORDS[kind]}, got {describe(value)}", hint or _number_hint(owner, name, ctx)
    if kind in _BOUNDS:
        key, words = _BOUNDS[kind]
        return f"{words} {ctx.get(key)}, got {describe(value)}", _number_hint(owner, name, ctx)
    if kind == "string_pattern_mismatch":
        about = _description(owner, name)
        examples = (
            owner.model_fields[name].examples if owner and name in owner.model_fields else None
        )
        hint = f"{name}: {about}" if about else f"match the pattern {ctx.get('pattern')}"
        if examples:
            hint += f", e.g. {name}: {examples[0]}"
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
    field = model.model_fields.get(name) if model is not None else None
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


def _unknown_field_hint(name: str, allowed: Sequence[str]) -> str:
    if not allowed:
        return "remove it"
    return choose_hint(name, allowed, "fields").replace("known fields", "allowed fields")


def _quoted(text: str) -> list[str]:
    return re.findall(r"'([^']*)'", text)


def _description(model: type[BaseModel] | None, name: str) -> str | None:
    if model is None or name not in model.model_fields:
        return None
    description = model.model_fields[name].description
    return description.rstrip(".") if description else None


def _fields(model: type[BaseModel] | None) -> list[str]:
    if model is None:
        return []
    return [name for name in model.model_fields if name != "kind"]


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
        field = annotation.model_fields.get(str(part))
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
