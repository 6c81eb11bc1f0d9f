"""One migration as a release knows it: its file, declared and inferred class, and its undo.

A declaration (a ``-- conveyor: expand`` comment or an ``_expand_`` file name) is what the
author says; the inferred class is what the statements say; ``effective`` lets "contract" win
so a mislabelled drop is still guarded.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import PurePosixPath
from typing import Any

from conveyor.core.migrations.classify import (
    KINDS,
    Kind,
    alembic_revisions,
    classify_alembic,
    classify_sql,
    has_alembic_undo,
)

UNDO_SUFFIXES = (".undo.sql", ".down.sql")
ALEMBIC_UNDO = "downgrade()"

_DECLARED = re.compile(
    r"^\s*(?:--|#)\s*conveyor\s*:\s*(?P<kind>expand|contract)\b"
    r"(?:\s+after\s+(?P<after>[A-Za-z0-9_.,\- ]+?))?\s*$",
    re.IGNORECASE | re.MULTILINE,
)
_NAMED = re.compile(r"(?:^|[_.\-])(?P<kind>expand|contract)(?:[_.\-]|$)", re.IGNORECASE)


@dataclass(frozen=True)
class Declaration:
    """What a migration says of itself: by a comment (with its line) or by its file name."""

    kind: Kind | None = None
    after: tuple[str, ...] = ()
    line: int | None = None
    by_name: Kind | None = None

    @property
    def conflict(self) -> bool:
        return self.kind is not None and self.by_name is not None and self.kind != self.by_name

    @property
    def declared(self) -> Kind | None:
        return self.kind or self.by_name


def declaration(path: str, text: str) -> Declaration:
    """``-- conveyor: expand`` / ``# conveyor: contract after ID[, ID]`` anywhere in the file,
    and ``expand``/``contract`` as a word of the file name (``0002_expand_add_email.sql``)."""
    match = _DECLARED.search(text)
    named = _NAMED.search(migration_id(path))
    by_name: Kind | None = None
    if named is not None:
        by_name = "expand" if named.group("kind").lower() == "expand" else "contract"
    if match is None:
        return Declaration(by_name=by_name)
    kind: Kind = "expand" if match.group("kind").lower() == "expand" else "contract"
    after = tuple(a.strip() for a in re.split(r"[,\s]+", match.group("after") or "") if a.strip())
    line = text.count("\n", 0, match.start()) + 1
    return Declaration(kind, after, line, by_name)


def migration_id(path: str) -> str:
    """A migration's id: its file name without ``.sql``/``.py``."""
    name = PurePosixPath(path).name
    for suffix in (".sql", ".py"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def is_undo(path: str) -> bool:
    return path.endswith(UNDO_SUFFIXES)


def undo_candidates(path: str) -> tuple[str, ...]:
    """Where the undo of a SQL migration is looked for, in order."""
    stem = path.removesuffix(".sql")
    return tuple(stem + suffix for suffix in UNDO_SUFFIXES)


@dataclass(frozen=True)
class Lint:
    """A linter's finding about one migration (squawk's rule, message and suggested fix)."""

    line: int
    rule: str
    level: str  # "error" | "warning"
    message: str
    help: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "line": self.line,
            "rule": self.rule,
            "level": self.level,
            "message": self.message,
            "help": self.help,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Lint:
        return cls(
            int(data["line"]),
            str(data["rule"]),
            str(data["level"]),
            str(data["message"]),
            None if data.get("help") is None else str(data["help"]),
        )


@dataclass(frozen=True)
class Migration:
    """One migration as a release knows it: frozen into the plan, compared across releases."""

    id: str
    file: str
    kind: Kind  # effective: "contract" if either the declaration or the statements say so
    inferred: Kind
    declared: Kind | None = None
    reasons: tuple[str, ...] = ()  # the statements that decided the inferred class
    undo: str | None = None  # the undo file, or "downgrade()"
    after: tuple[str, ...] = ()  # a contract: the expands it completes
    aliases: tuple[str, ...] = ()  # an Alembic revision id
    tables: tuple[str, ...] = ()
    lint: tuple[Lint, ...] | None = None  # None: not linted (see MigrateSpec.lint_note)

    @property
    def names(self) -> frozenset[str]:
        return frozenset((self.id, *self.aliases))

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "file": self.file,
            "kind": self.kind,
            "inferred": self.inferred,
            "declared": self.declared,
            "reasons": list(self.reasons),
            "undo": self.undo,
            "after": list(self.after),
            "aliases": list(self.aliases),
            "tables": list(self.tables),
        }
        if self.lint is not None:
            data["lint"] = [f.to_json() for f in self.lint]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Migration:
        lint = data.get("lint")
        return cls(
            id=str(data["id"]),
            file=str(data["file"]),
            kind=_kind(data["kind"]),
            inferred=_kind(data.get("inferred", data["kind"])),
            declared=_kind(data["declared"]) if data.get("declared") else None,
            reasons=tuple(str(r) for r in data.get("reasons") or ()),
            undo=data.get("undo"),
            after=tuple(str(a) for a in data.get("after") or ()),
            aliases=tuple(str(a) for a in data.get("aliases") or ()),
            tables=tuple(str(t) for t in data.get("tables") or ()),
            lint=None if lint is None else tuple(Lint.from_json(f) for f in lint),
        )


def _kind(value: object) -> Kind:
    text = str(value)
    if text not in KINDS:
        raise ValueError(f"unknown migration class {text!r}")
    return text


def effective(declared: Kind | None, inferred: Kind) -> Kind:
    """Contract if either says so (a mislabelled drop is still guarded); else the
    declaration; else what the statements say."""
    if "contract" in (declared, inferred):
        return "contract"
    return declared or inferred


def read_migrations(
    files: Mapping[str, str],
    *,
    rendered: Mapping[str, str] | None = None,
    rendered_undo: Mapping[str, str] | None = None,
) -> tuple[Migration, ...]:
    """Every migration among ``files`` (path -> text: migrations and their undo files), in
    order, classified, paired with its undo and, for a contract, with the expands it completes.

    ``rendered`` holds the SQL an Alembic revision renders to (``alembic upgrade --sql``),
    which classifies it better than reading its ``op.*`` calls; ``rendered_undo`` the SQL
    its ``downgrade()`` renders to.
    """
    rendered, rendered_undo = rendered or {}, rendered_undo or {}
    found: list[Migration] = []
    for path in ordered(files):
        text = files[path]
        said = declaration(path, text)
        aliases: tuple[str, ...] = ()
        if path.endswith(".py"):
            revision, _ = alembic_revisions(text)
            aliases = (revision,) if revision and revision != migration_id(path) else ()
            inferred = classify_sql(rendered[path]) if path in rendered else classify_alembic(text)
            if path in rendered_undo:
                undo = ALEMBIC_UNDO if classify_sql(rendered_undo[path]).verdicts else None
            else:
                undo = ALEMBIC_UNDO if has_alembic_undo(text) else None
        else:
            inferred = classify_sql(text)
            undo = next((u for u in undo_candidates(path) if u in files), None)
        found.append(
            Migration(
                id=migration_id(path),
                file=path,
                kind=effective(said.declared, inferred.kind),
                inferred=inferred.kind,
                declared=said.declared,
                reasons=tuple(v.describe() for v in inferred.deciding[:5]),
                undo=undo,
                after=said.after,
                aliases=aliases,
                tables=inferred.tables,
            )
        )
    return tuple(_completing(found))


def ordered(files: Mapping[str, str]) -> list[str]:
    """Migration paths in the order they apply: SQL by name; Alembic revisions along their
    ``down_revision`` chain (by name where the chain says nothing)."""
    paths = sorted(p for p in files if p.endswith((".sql", ".py")) and not is_undo(p))
    alembic = [p for p in paths if p.endswith(".py")]
    if not alembic:
        return paths
    revisions = {p: alembic_revisions(files[p]) for p in alembic}
    depth: dict[str, int] = {}
    by_revision = {rev: p for p, (rev, _) in revisions.items() if rev}

    def chain(path: str, seen: frozenset[str] = frozenset()) -> int:
        if path in depth:
            return depth[path]
        down = revisions[path][1]
        parent = by_revision.get(down) if down else None
        value = 0 if parent is None or parent in seen else chain(parent, seen | {path}) + 1
        depth[path] = value
        return value

    return sorted(paths, key=lambda p: (chain(p) if p in revisions else 0, p))


def _completing(migrations: list[Migration]) -> list[Migration]:
    """Each contract with the expands it completes: those it declares (``after``), else the
    earlier expands of its tables, else every earlier expand."""
    done: list[Migration] = []
    for index, migration in enumerate(migrations):
        if migration.kind != "contract" or migration.after:
            done.append(migration)
            continue
        earlier = [m for m in migrations[:index] if m.kind == "expand"]
        touching = [m for m in earlier if set(m.tables) & set(migration.tables)]
        after = tuple(m.id for m in (touching or earlier))
        done.append(replace(migration, after=after))
    return done
