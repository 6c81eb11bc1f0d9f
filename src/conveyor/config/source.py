"""YAML text as a tree of values that remember the file and line they were written at.

This is Conveyor's only YAML reader. conveyor.yaml and every pipeline template it extends go
through ``read_yaml``, so they share one set of safety limits (node count, nesting depth) and
one translation of YAML errors into located ``ConfigProblem``s.

Each value is a ``Node`` carrying its ``Origin`` (file, 1-based line). Keeping the origin on the
value rather than in a separate path -> line table is what lets ``extends.merge`` combine
a template and a service block and still say, for every value of the result, which file and
line it came from: a mistake in a template is then reported in the template.

ruamel.yaml's round-trip loader is used because it remembers where each key and list item
was. Its nodes are copied into plain ``str``/``int``/``float``/``bool`` values (pydantic never
sees ruamel's subclasses); aliases are copied, not shared, so the node counter bounds the
work an alias bomb can cause, and the depth limit stops a recursive alias.
"""

from __future__ import annotations

import datetime as dt
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedSeq, TaggedScalar
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from conveyor.errors import ConfigError, ConfigProblem

MAX_NODES = 100_000
MAX_DEPTH = 64

DataPath = tuple[str | int, ...]
"""Where a value sits in a document: mapping keys and list indexes, from the top."""


@dataclass(frozen=True, slots=True)
class Origin:
    """The file and 1-based line a value was written at (its key's line, in a mapping)."""

    file: str
    line: int


@dataclass(frozen=True, slots=True)
class Node:
    """A YAML value and its origin; mappings hold ``dict[str, Node]``, lists ``list[Node]``."""

    value: object
    origin: Origin

    def plain(self) -> object:
        """The value as plain dicts, lists and scalars, origins dropped (for pydantic)."""
        if isinstance(self.value, dict):
            return {key: node.plain() for key, node in self.value.items()}
        if isinstance(self.value, list):
            return [node.plain() for node in self.value]
        return self.value

    def origins(self) -> dict[DataPath, Origin]:
        """Every value's origin by its path below this node (``()`` is this node)."""
        found: dict[DataPath, Origin] = {}
        pending: list[tuple[DataPath, Node]] = [((), self)]
        while pending:
            path, node = pending.pop()
            found[path] = node.origin
            if isinstance(node.value, dict):
                pending.extend(((*path, key), child) for key, child in node.value.items())
            elif isinstance(node.value, list):
                pending.extend(((*path, index), child) for index, child in enumerate(node.value))
        return found

    def entries(self) -> dict[str, Node] | None:
        """The mapping's entries, or None when this is not a mapping."""
        return self.value if isinstance(self.value, dict) else None


def read_yaml(text: str, file: str) -> Node:
    """Parse one YAML document; every failure is a ``ConfigError`` located in ``file``.

    An empty document is a ``Node`` whose value is None, at line 1.
    """
    yaml = YAML(typ="rt")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ruamel warns on e.g. reused anchors: not our call
            document = yaml.load(text)
    except YAMLError as exc:
        raise ConfigError([_yaml_problem(exc, file)]) from None
    except RecursionError:
        raise ConfigError([file_problem(file, "the YAML is nested too deeply", NESTING)]) from None
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        # ruamel's constructors raise bare Python errors for some tagged values (!!int x).
        raise ConfigError(
            [file_problem(file, f"invalid YAML value: {exc}", "check explicit !!tags")]
        ) from None
    try:
        return _Reader(file).convert(document, (_line_of(document) or 0) + 1, 0)
    except _TooComplex as exc:
        raise ConfigError([file_problem(file, str(exc), NESTING)]) from None


def file_problem(file: str | Path, message: str, hint: str) -> ConfigProblem:
    """A problem with a whole file rather than one of its values."""
    return ConfigProblem(file=str(file), line=None, field="(file)", message=message, hint=hint)


NESTING = "a conveyor.yaml is a few levels deep; check for runaway anchors or brackets"


class _TooComplex(Exception):
    pass


class _Reader:
    """Copies ruamel's round-trip nodes into ``Node``s, counting them."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.nodes = 0

    def convert(self, node: object, line: int, depth: int) -> Node:
        self.nodes += 1
        if self.nodes > MAX_NODES or depth > MAX_DEPTH:
            raise _TooComplex("the YAML document is too large or too deeply nested")
        origin = Origin(self.file, line)
        if isinstance(node, Mapping):
            return Node(self._mapping(node, line, depth), origin)
        if isinstance(node, CommentedSeq | list | set | tuple):
            return Node(self._sequence(list(node), node, line, depth), origin)
        return Node(_scalar(node), origin)

    def _mapping(self, node: Mapping[Any, Any], line: int, depth: int) -> dict[str, Node]:
        out: dict[str, Node] = {}
        for raw_key, value in node.items():
            position = _position(node, raw_key)
            at = position + 1 if position is not None else line
            out[_key_text(raw_key)] = self.convert(value, at, depth + 1)
        return out

    def _sequence(self, items: list[Any], node: object, line: int, depth: int) -> list[Node]:
        out: list[Node] = []
        for index, value in enumerate(items):
            position = _position(node, index)
            at = position + 1 if position is not None else line
            out.append(self.convert(value, at, depth + 1))
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
        return file_problem(
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
