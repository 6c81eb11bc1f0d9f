"""``pipeline: {extends: PATH}``: merge shared pipeline templates into a service's block.

A platform team writes one template; each service's conveyor.yaml says
``pipeline: {extends: ../template.yaml}`` and overrides what differs. The merge is a deep
merge where the service wins: mappings merge key by key (``jobs`` therefore merge by job
name, and a job's ``env`` by variable), anything else (lists, strings) is replaced whole, and
a job set to ``null`` is removed. A template is a file holding a bare pipeline block or one
under a ``pipeline:`` key; templates may extend templates, up to ``MAX_TEMPLATE_DEPTH``
deep, and a cycle is an error.

The merge works on ``source.Node`` trees, so every value of the result still carries the
file and line it was written at: the loader reports a mistake in a template in the
template, and one in the service in the service. Templates are read by the same
``read_yaml`` as conveyor.yaml, with the same limits.

``extends:`` is resolved relative to the directory of the file that names it. Text that did
not come from a file (``parse_config`` given a label rather than an absolute path) has no
directory, so it may only extend absolute paths; a relative one is a problem saying so.
"""

from __future__ import annotations

from pathlib import Path

from conveyor.config.source import Node, Origin, read_yaml
from conveyor.errors import ConfigError, ConfigProblem

MAX_TEMPLATE_DEPTH = 8
"""Templates a pipeline may stack: the service's block extends at most this many files."""

_FIELD = "pipeline.extends"
_RELATIVE = "the path is relative to the file that names it"


def resolve_pipeline(document: Node, file: str) -> tuple[Node, list[ConfigProblem]]:
    """``document`` (a conveyor.yaml mapping) with its pipeline's templates merged in.

    A template that cannot be used (missing, unreadable, broken YAML, a cycle) is returned as
    problems, with the pipeline removed from the document, so the rest of the file is still
    validated and every problem is reported at once.
    """
    entries = document.entries()
    block = entries.get("pipeline") if entries is not None else None
    if entries is None or block is None or block.entries() is None:
        return document, []
    path = Path(file)
    naming = path.resolve() if path.is_absolute() else None
    try:
        resolved = _resolve(block, naming, (naming,) if naming is not None else (), 1)
    except ConfigError as error:
        resolved, problems = Node(None, block.origin), list(error.problems)
    else:
        problems = []
    return Node({**entries, "pipeline": resolved}, document.origin), problems


def merge(base: Node, override: Node) -> Node:
    """Deep merge, ``override`` winning: mappings merge by key, anything else is replaced."""
    base_entries, override_entries = base.entries(), override.entries()
    if base_entries is None or override_entries is None:
        return override
    merged = dict(base_entries)
    for key, value in override_entries.items():
        current = merged.get(key)
        merged[key] = merge(current, value) if current is not None else value
    return Node(merged, override.origin)


def _resolve(block: Node, naming: Path | None, chain: tuple[Path, ...], depth: int) -> Node:
    """``block`` (written in ``naming``) merged over the templates it extends."""
    entries = dict(block.entries() or {})
    extends = entries.pop("extends", None)
    own = Node(entries, block.origin)
    if extends is None or extends.value is None:
        return _drop_removed(own)
    where = extends.origin
    template = _template_path(extends, naming)
    if template in chain:
        cycle = " -> ".join(str(p) for p in (*chain, template))
        raise _problem(where, f"templates extend each other: {cycle}", "remove one extends:")
    if depth > MAX_TEMPLATE_DEPTH:
        raise _problem(
            where,
            f"templates nest more than {MAX_TEMPLATE_DEPTH} deep",
            "merge some of the templates into one",
        )
    base = _template_block(_read(template, extends), template)
    base = _resolve(base, template, (*chain, template), depth + 1)
    return _drop_removed(merge(base, own))


def _template_path(extends: Node, naming: Path | None) -> Path:
    value = extends.value
    if not isinstance(value, str) or not value.strip():
        raise _problem(
            extends.origin,
            "expected a path to a template file",
            "e.g. extends: ../template.yaml (" + _RELATIVE + ")",
        )
    written = Path(value)
    if not written.is_absolute() and naming is None:
        raise _problem(
            extends.origin,
            f"cannot resolve the relative template path {value!r}: this text was not read "
            "from a file",
            "load the config from its file (load_project), or use an absolute path",
        )
    try:
        return (naming.parent / written if naming is not None else written).resolve()
    except (OSError, ValueError) as exc:  # a NUL byte, a symlink loop, a name too long
        raise _problem(
            extends.origin, f"{value!r} is not a usable path: {exc}", _RELATIVE
        ) from None


def _read(template: Path, extends: Node) -> Node:
    try:
        if not template.is_file():
            raise _problem(
                extends.origin,
                f"template {extends.value!r} not found (looked for {template})",
                _RELATIVE,
            )
        text = template.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise _problem(
            extends.origin, f"cannot read {template}: {exc}", "check it is readable UTF-8"
        ) from None
    return read_yaml(text, str(template))


def _template_block(document: Node, template: Path) -> Node:
    """The pipeline block of a template file: the whole file, or its ``pipeline:`` key."""
    entries = document.entries()
    block = entries.get("pipeline", document) if entries is not None else document
    if block.entries() is None:
        raise ConfigError(
            [
                ConfigProblem(
                    str(template),
                    block.origin.line,
                    "pipeline",
                    "a template is a mapping (a pipeline block)",
                    "write the template's fields (jobs:, vars:, ...) at its top level or "
                    "under pipeline:",
                )
            ]
        )
    return block


def _drop_removed(block: Node) -> Node:
    """A job set to ``null`` is removed, which is how a service drops a template's job."""
    entries = block.entries() or {}
    jobs = entries.get("jobs")
    job_entries = jobs.entries() if jobs is not None else None
    if jobs is None or job_entries is None:
        return block
    kept = {name: job for name, job in job_entries.items() if job.value is not None}
    return Node({**entries, "jobs": Node(kept, jobs.origin)}, block.origin)


def _problem(where: Origin, message: str, hint: str) -> ConfigError:
    return ConfigError([ConfigProblem(where.file, where.line, _FIELD, message, hint)])
