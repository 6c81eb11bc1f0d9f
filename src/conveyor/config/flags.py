"""``flags:`` and ``segments:``: feature flags defined in conveyor.yaml or a ``flags/`` directory.

Flags are reviewed like code: a flag is written in conveyor.yaml's ``flags:`` or in any
``flags/*.yaml`` next to it (each file holds ``flags:`` and/or ``segments:``; a key defined
twice is an error naming both files). The shape is ``core.flags.model``'s JSON, and
``core.flags.flag_from_json`` is the one checker: this module only walks the document and
turns its ``FlagDefinitionError`` into a ``ConfigProblem`` at the file and line of the
offending value (the deepest part of the path that exists), with the checker's hint.

What the file says is the *baseline*: changes made live (``conveyor flag on|off|rollout``)
are stored by the server and win over it; ``conveyor flag drift`` shows the difference and
writes it back into ``flags/KEY.yaml``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from conveyor.config.source import DataPath, Node, Origin, file_problem, read_yaml
from conveyor.core.flags.model import (
    Flag,
    FlagDefinitionError,
    Segment,
    flag_from_json,
    segment_from_json,
)
from conveyor.errors import ConfigError, ConfigProblem

FLAGS_DIR = "flags"
MAX_FILES = 500
MAX_FILE_BYTES = 1024 * 1024
FLAG_DESCRIPTION = (
    "Feature flags by key: kind, variants, default/off variants and, per environment, on, "
    "rules (when: conditions, segments:, serve: or rollout:) and a sticky rollout "
    "(see docs/flags.md). Changes made live win over what is written here."
)
SEGMENT_DESCRIPTION = (
    "Groups of users reused by flag rules: a name and its conditions (when:), e.g. "
    "beta-testers: {when: [{attribute: email, op: ends_with, values: ['@corp.com']}]}."
)


def merge_flag_files(document: Node, file: str) -> tuple[Node, list[ConfigProblem]]:
    """conveyor.yaml with every ``flags/*.yaml`` beside it merged into ``flags:``/``segments:``."""
    entries = document.entries()
    config = Path(file)
    folder = config.parent / FLAGS_DIR
    if entries is None or not config.is_absolute() or not folder.is_dir():
        return document, []
    problems: list[ConfigProblem] = []
    merged: dict[str, dict[str, Node]] = {}
    sections: dict[str, Node] = {}
    seen: dict[tuple[str, str], Origin] = {}
    for section in ("flags", "segments"):
        node = entries.get(section)
        if node is not None and node.entries() is not None:
            merged[section] = dict(node.entries() or {})
            sections[section] = node
            for key, child in merged[section].items():
                seen[(section, key)] = child.origin
    files = sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")])
    if len(files) > MAX_FILES:
        problems.append(file_problem(folder, f"more than {MAX_FILES} files", "merge some"))
        files = files[:MAX_FILES]
    for path in files:
        try:
            if path.stat().st_size > MAX_FILE_BYTES:
                problems.append(file_problem(path, "the file is over 1 MiB", "split it"))
                continue
            node = read_yaml(path.read_text(encoding="utf-8"), str(path))
        except ConfigError as error:
            problems.extend(error.problems)
            continue
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(file_problem(path, f"cannot read the file: {exc}", "readable UTF-8"))
            continue
        own = node.entries()
        if node.value is None:
            continue
        if own is None or set(own) - {"flags", "segments"}:
            problems.append(
                ConfigProblem(
                    file=str(path),
                    line=node.origin.line,
                    field="(file)",
                    message="a flags file is a mapping with flags: and/or segments:",
                    hint="flags:\n  my-flag: {environments: {staging: {on: true}}}",
                )
            )
            continue
        for section, block in own.items():
            items = block.entries()
            if items is None:
                problems.append(
                    ConfigProblem(str(path), block.origin.line, section, "expected a mapping", None)
                )
                continue
            target = merged.setdefault(section, {})
            for key, child in items.items():
                if (section, key) in seen:
                    first = seen[(section, key)]
                    problems.append(
                        ConfigProblem(
                            file=str(path),
                            line=child.origin.line,
                            field=f"{section}.{key}",
                            message=f"{key!r} is defined twice "
                            f"(first at {first.file}:{first.line})",
                            hint="keep one definition",
                        )
                    )
                    continue
                seen[(section, key)] = child.origin
                target[key] = child
            sections.setdefault(section, block)
    out = dict(entries)
    for section, items in merged.items():
        out[section] = Node(items, sections[section].origin)
    return Node(out, document.origin), problems


def flag_problems(
    data: Mapping[str, Any], origins: Mapping[DataPath, Origin], environments: set[str]
) -> list[ConfigProblem]:
    """Each flag and segment checked by the core parser, problems located in their file."""
    problems: list[ConfigProblem] = []
    segments = data.get("segments")
    names = list(segments) if isinstance(segments, dict) else []
    for name, raw in segments.items() if isinstance(segments, dict) else ():
        try:
            segment_from_json(str(name), raw)
        except FlagDefinitionError as error:
            problems.append(_located(("segments", name, *error.path), error, data, origins))
    flags = data.get("flags")
    for key, raw in flags.items() if isinstance(flags, dict) else ():
        try:
            flag = flag_from_json(str(key), raw, names)
        except FlagDefinitionError as error:
            problems.append(_located(("flags", key, *error.path), error, data, origins))
            continue
        for env in flag.environments:
            if environments and env not in environments:
                unknown = FlagDefinitionError(
                    ("environments", env),
                    f"unknown environment {env!r}",
                    "declared: " + ", ".join(sorted(environments)),
                )
                problems.append(
                    _located(("flags", key, "environments", env), unknown, data, origins)
                )
    return problems


def parse_flags(
    flags: Mapping[str, Any], segments: Mapping[str, Any]
) -> tuple[dict[str, Flag], dict[str, Segment]]:
    """The typed flags and segments of a config that validated (``flag_problems`` passed)."""
    parsed_segments = {name: segment_from_json(name, raw) for name, raw in segments.items()}
    names = list(parsed_segments)
    return {key: flag_from_json(key, raw, names) for key, raw in flags.items()}, parsed_segments


def _located(
    path: DataPath, error: FlagDefinitionError, data: object, origins: Mapping[DataPath, Origin]
) -> ConfigProblem:
    found: list[str | int] = []
    node = data
    for part in path:
        in_dict = isinstance(node, dict) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if not (in_dict or in_list):
            break
        node = node[part]  # type: ignore[index]
        found.append(part)
    origin = origins.get(tuple(found)) or origins[()]
    field = ""
    for part in path:
        field += f"[{part}]" if isinstance(part, int) else (f".{part}" if field else str(part))
    return ConfigProblem(
        file=origin.file, line=origin.line, field=field, message=error.message, hint=error.hint
    )


def write_back(config_file: Path, key: str, definition: Mapping[str, Any]) -> Path:
    """Write a flag's definition where it is defined: the ``flags/`` file that holds it,
    conveyor.yaml's ``flags:`` when it is there, or a new ``flags/KEY.yaml``. Round-trip
    YAML, so comments and the order of everything else stay as they were."""
    from ruamel.yaml import YAML

    yaml = YAML(typ="rt")
    yaml.indent(mapping=2, sequence=4, offset=2)
    folder = config_file.parent / FLAGS_DIR
    candidates = [
        *sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")] if folder.is_dir() else []),
        config_file,
    ]
    for path in candidates:
        data = yaml.load(path.read_text(encoding="utf-8"))
        flags = data.get("flags") if isinstance(data, dict) else None
        if isinstance(flags, dict) and key in flags:
            flags[key] = _plain(definition)
            _dump(yaml, data, path)
            return path
    folder.mkdir(exist_ok=True)
    path = folder / f"{key}.yaml"
    _dump(yaml, {"flags": {key: _plain(definition)}}, path)
    return path


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _dump(yaml: Any, data: Any, path: Path) -> None:
    import io

    buffer = io.StringIO()
    yaml.dump(data, buffer)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(buffer.getvalue(), encoding="utf-8")
    tmp.replace(path)
