"""The ``pipeline:`` block as the user wrote it, with ``extends:`` templates resolved.

A platform team writes one template; each service's conveyor.yaml says
``pipeline: {extends: ../template.yaml}`` and overrides what differs. The merge is a deep
merge where the service wins: mappings merge key by key (``jobs`` therefore merge by job
name, and a job's ``env`` by variable), anything else (lists, strings) is replaced whole, and
a job set to ``null`` is removed. Templates may extend templates; a cycle is an error.

The config layer only knows that ``pipeline:`` is a mapping (it sits below this package and
must not import it), so the block is validated here, against ``PipelineSpec``. Every value
keeps the file and line it came from through the merge, so a mistake in a template is
reported in the template, and one in the service in the service.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path

from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from conveyor.errors import ConfigError, ConfigProblem
from conveyor.pipeline.model import PipelineSpec

Path_ = tuple[str | int, ...]
Origins = dict[Path_, tuple[str, int | None]]
"""Data path (inside the pipeline block) -> (file, 1-based line) it was written at."""

_MAX_DEPTH = 8


def load_pipeline(config_file: Path) -> PipelineSpec | None:
    """The resolved, validated pipeline of a conveyor.yaml, or None if it declares none."""
    document = _read(config_file, config_file, None)
    if not isinstance(document, CommentedMap) or document.get("pipeline") is None:
        return None
    node = document["pipeline"]
    origins: Origins = {}
    block = _plain(node, (), str(config_file), origins)
    if not isinstance(block, dict):
        raise _error(
            str(config_file), _line(document, "pipeline"), "pipeline", "expected a mapping"
        )
    merged, origins = _resolve(block, origins, config_file, (config_file.resolve(),))
    try:
        return PipelineSpec.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(
            [_problem(error["loc"], error["msg"], origins, config_file) for error in exc.errors()]
        ) from None


def merge(base: Mapping[str, object], override: Mapping[str, object]) -> dict[str, object]:
    """Deep merge, ``override`` winning; a ``None`` job in ``override`` removes the job."""
    out: dict[str, object] = dict(base)
    for key, value in override.items():
        current = out.get(key)
        if isinstance(current, Mapping) and isinstance(value, Mapping):
            out[key] = merge(current, value)
        else:
            out[key] = value
    return out


def _resolve(
    block: dict[str, object], origins: Origins, file: Path, chain: tuple[Path, ...]
) -> tuple[dict[str, object], Origins]:
    extends = block.pop("extends", None)
    where = origins.get(("extends",), (str(file), None))
    origins = {path: origin for path, origin in origins.items() if path[:1] != ("extends",)}
    if extends is None:
        return _drop_removed(block), origins
    if not isinstance(extends, str) or not extends:
        raise _error(*where, "pipeline.extends", "expected a path to a template file")
    template = (file.parent / extends).resolve()
    if template in chain:
        cycle = " -> ".join(str(p) for p in (*chain, template))
        raise _error(*where, "pipeline.extends", f"templates extend each other: {cycle}")
    if len(chain) > _MAX_DEPTH:
        raise _error(*where, "pipeline.extends", "templates nest more than 8 deep")
    if not template.is_file():
        raise ConfigError(
            [
                ConfigProblem(
                    where[0],
                    where[1],
                    "pipeline.extends",
                    f"template {extends!r} not found (looked for {template})",
                    "the path is relative to the file that names it",
                )
            ]
        )
    document = _read(template, Path(where[0]), where[1])
    if isinstance(document, CommentedMap) and "pipeline" in document:
        document = document["pipeline"]
    base_origins: Origins = {}
    base = _plain(document, (), str(template), base_origins)
    if not isinstance(base, dict):
        raise _error(str(template), 1, "pipeline", "a template is a mapping (a pipeline block)")
    base, base_origins = _resolve(base, base_origins, template, (*chain, template))
    return _drop_removed(merge(base, block)), {**base_origins, **origins}


def _drop_removed(block: dict[str, object]) -> dict[str, object]:
    jobs = block.get("jobs")
    if isinstance(jobs, dict):
        block = {**block, "jobs": {k: v for k, v in jobs.items() if v is not None}}
    return block


def _read(file: Path, named_in: Path, line: int | None) -> object:
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise _error(
            str(named_in), line, "pipeline.extends", f"cannot read {file}: {exc}"
        ) from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return YAML(typ="rt").load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = mark.line + 1 if mark is not None else None
        raise _error(str(file), where, "(file)", f"invalid YAML: {exc.problem}") from None
    except (YAMLError, ValueError, TypeError, RecursionError) as exc:
        raise _error(str(file), None, "(file)", f"invalid YAML: {exc}") from None


def _line(node: object, key: str | int) -> int | None:
    try:
        if isinstance(node, CommentedMap):
            return int(node.lc.key(key)[0]) + 1
        if isinstance(node, CommentedSeq):
            return int(node.lc.item(key)[0]) + 1
    except (KeyError, IndexError, TypeError, AttributeError):
        return None
    return None


def _plain(node: object, path: Path_, file: str, origins: Origins) -> object:
    """ruamel's round-trip nodes as dicts/lists/scalars, recording each value's line."""
    if isinstance(node, CommentedMap):
        out: dict[str, object] = {}
        for key, value in node.items():
            name = str(key)
            origins[(*path, name)] = (file, _line(node, key))
            out[name] = _plain(value, (*path, name), file, origins)
        return out
    if isinstance(node, CommentedSeq):
        items: list[object] = []
        for index, value in enumerate(node):
            origins[(*path, index)] = (file, _line(node, index))
            items.append(_plain(value, (*path, index), file, origins))
        return items
    if isinstance(node, str):
        return str(node)
    return node


def _problem(
    loc: tuple[str | int, ...], message: str, origins: Origins, config_file: Path
) -> ConfigProblem:
    loc = tuple(part for part in loc if part not in ("str", "list[str]", "function-after"))
    origin: tuple[str, int | None] = (str(config_file), None)
    for size in range(len(loc), 0, -1):
        if loc[:size] in origins:
            origin = origins[loc[:size]]
            break
    field = ".".join(("pipeline", *(str(part) for part in loc)))
    return ConfigProblem(origin[0], origin[1], field, message, "see docs/pipelines.md")


def _error(file: str, line: int | None, field: str, message: str) -> ConfigError:
    return ConfigError([ConfigProblem(file, line, field, message, "see docs/pipelines.md")])
