"""What a migration does to the schema, read from its statements: expand, contract, neutral.

SQL is cut into statements by ``core.sql`` and each is classified by its leading keywords;
Alembic migrations are read, never run: their ``op.*`` calls are classified the same way. The
worst statement decides (``worst``), so one drop among additions makes a contract.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from conveyor.core.sql import identifier, split_statements

Kind = Literal["expand", "contract", "neutral", "unknown"]
KINDS: tuple[Kind, ...] = ("expand", "contract", "neutral", "unknown")

_REVISION = re.compile(r"^revision\s*(?::\s*\w+\s*)?=\s*['\"]([^'\"]+)['\"]", re.MULTILINE)
_DOWN_REVISION = re.compile(
    r"^down_revision\s*(?::[^=]+)?=\s*(?:['\"]([^'\"]+)['\"]|None)", re.MULTILINE
)
_OP_CALL = re.compile(r"\b(?:op|batch_op)\.(\w+)\(")
_STRING = re.compile(r"""(?:[rRbBuU]{0,2})("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')""")
_TRIPLE = re.compile(r'(?:[rR]?)("""[\s\S]*?"""|\'\'\'[\s\S]*?\'\'\')')


@dataclass(frozen=True)
class Verdict:
    """What one statement (or ``op.*`` call) does to the schema, and the words that said so."""

    line: int
    kind: Kind
    reason: str
    statement: str
    table: str | None = None

    def describe(self) -> str:
        shown = self.statement if len(self.statement) <= 100 else self.statement[:97] + "..."
        return f"line {self.line}: {shown} ({self.reason})"


@dataclass(frozen=True)
class Inferred:
    """The class the statements give a migration: the worst of them (contract > unknown >
    expand > neutral), with the statements that decided it."""

    kind: Kind
    verdicts: tuple[Verdict, ...] = ()

    @property
    def deciding(self) -> tuple[Verdict, ...]:
        return tuple(v for v in self.verdicts if v.kind == self.kind)

    @property
    def tables(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(v.table for v in self.verdicts if v.table))


_RANK: dict[Kind, int] = {"neutral": 0, "expand": 1, "unknown": 2, "contract": 3}


def worst(verdicts: Sequence[Verdict]) -> Inferred:
    kind: Kind = "neutral"
    for verdict in verdicts:
        if _RANK[verdict.kind] > _RANK[kind]:
            kind = verdict.kind
    return Inferred(kind, tuple(verdicts))


_NEUTRAL_STARTS = (
    "BEGIN",
    "COMMIT",
    "START TRANSACTION",
    "END",
    "ROLLBACK",
    "SET ",
    "RESET ",
    "SELECT",
    "INSERT",
    "UPDATE",
    "DELETE",
    "WITH ",
    "COMMENT ON",
    "GRANT",
    "REVOKE",
    "ANALYZE",
    "VACUUM",
    "LOCK ",
    "SHOW ",
    "COPY ",
    "NOTIFY",
    "REFRESH MATERIALIZED VIEW",
)
_EXPAND_CREATES = (
    "TABLE",
    "VIEW",
    "MATERIALIZED VIEW",
    "SEQUENCE",
    "TYPE",
    "FUNCTION",
    "PROCEDURE",
    "EXTENSION",
    "SCHEMA",
    "TRIGGER",
    "DOMAIN",
    "AGGREGATE",
    "POLICY",
    "RULE",
    "COLLATION",
)


def classify_sql(sql: str, *, line_offset: int = 0) -> Inferred:
    """The class of a SQL migration, statement by statement."""
    verdicts: list[Verdict] = []
    for statement in split_statements(sql):
        for kind, reason, table in _statement(statement.text):
            verdicts.append(
                Verdict(statement.line + line_offset, kind, reason, statement.text, table)
            )
    return worst(verdicts)


def _statement(text: str) -> list[tuple[Kind, str, str | None]]:
    upper = text.upper()
    if upper.startswith(_NEUTRAL_STARTS) or upper in ("END", "COMMIT", "BEGIN"):
        return [("neutral", "data or session setting", None)]
    if upper.startswith("CREATE "):
        return [_create(text, upper)]
    if upper.startswith("DROP "):
        what = upper.split()[1] if len(upper.split()) > 1 else ""
        name = _after_keywords(text, 2, ("IF", "EXISTS", "CONCURRENTLY", "VIEW"))
        table = identifier(name) if what == "TABLE" and name else None
        return [("contract", f"drops a {what.lower() or 'thing'}", table)]
    if upper.startswith("TRUNCATE"):
        return [("contract", "removes every row", None)]
    if upper.startswith("ALTER TABLE"):
        return _alter_table(text, upper)
    if upper.startswith("ALTER TYPE"):
        if " ADD VALUE" in upper:
            return [("expand", "adds an enum value", None)]
        if " RENAME" in upper:
            return [("contract", "renames a type or value", None)]
        return [("unknown", "alters a type", None)]
    if upper.startswith(("ALTER INDEX", "ALTER SEQUENCE", "ALTER VIEW")):
        if " RENAME" in upper:
            return [("contract", "renames", None)]
        return [("neutral", "storage or ownership setting", None)]
    return [("unknown", "not a statement Conveyor classifies", None)]


def _create(text: str, upper: str) -> tuple[Kind, str, str | None]:
    words = upper.replace("OR REPLACE ", "").split()
    rest = words[1:]
    if rest and rest[0] in ("UNIQUE",):
        rest = rest[1:]
    if rest and rest[0] == "INDEX":
        match = re.search(r"\bON\s+(?:ONLY\s+)?([^\s(]+)", text, re.IGNORECASE)
        concurrently = "CONCURRENTLY" in rest[:3]
        reason = "a new index" + ("" if concurrently else " (built without CONCURRENTLY)")
        return ("expand", reason, identifier(match.group(1)) if match else None)
    for kind in ("TEMP", "TEMPORARY", "UNLOGGED", "GLOBAL", "LOCAL"):
        if rest and rest[0] == kind:
            rest = rest[1:]
    joined = " ".join(rest)
    for created in _EXPAND_CREATES:
        if joined.startswith(created):
            table = None
            if created == "TABLE":
                name = _after_keywords(text, 2, ("IF", "NOT", "EXISTS", "TABLE", "UNLOGGED"))
                table = identifier(name.split("(")[0]) if name else None
            return ("expand", f"a new {created.lower()}", table)
    return ("unknown", "creates something Conveyor does not classify", None)


def _after_keywords(text: str, skip: int, keywords: tuple[str, ...]) -> str:
    words = text.split()[skip:]
    while words and words[0].upper() in keywords:
        words = words[1:]
    return words[0] if words else ""


def _alter_table(text: str, upper: str) -> list[tuple[Kind, str, str | None]]:
    words = text.split()
    rest = words[2:]
    while rest and rest[0].upper() in ("IF", "EXISTS", "ONLY"):
        rest = rest[1:]
    if not rest:
        return [("unknown", "an ALTER TABLE without a table", None)]
    table = identifier(rest[0])
    body = " ".join(rest[1:])
    return [(kind, reason, table) for kind, reason in map(_alter_action, _top_level(body))]


def _top_level(body: str) -> list[str]:
    """ALTER TABLE's actions: the body split at commas outside parentheses and quotes."""
    parts, depth, current, quote = [], 0, [], ""
    for ch in body:
        if quote:
            current.append(ch)
            if ch == quote:
                quote = ""
            continue
        if ch in "'\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
            continue
        current.append(ch)
    parts.append("".join(current).strip())
    return [p for p in parts if p]


def _alter_action(action: str) -> tuple[Kind, str]:
    upper = f" {action.upper()} "
    head = upper.split()[0] if upper.split() else ""
    if head == "RENAME":
        return ("contract", "renames")
    if head == "VALIDATE":
        return ("contract", "validates a constraint: every row must satisfy it")
    if head == "DROP":
        if " CONSTRAINT " in upper:
            return ("expand", "drops a constraint (looser)")
        return ("contract", "drops a column")
    if head == "ADD":
        if re.match(r"\s*ADD\s+(CONSTRAINT|PRIMARY|UNIQUE|FOREIGN|CHECK|EXCLUDE)\b", upper):
            return ("contract", "adds a constraint (tighter)")
        if " NOT NULL " in upper and " DEFAULT " not in upper and "GENERATED" not in upper:
            return ("contract", "a required column without a default: old code's inserts fail")
        if " PRIMARY KEY" in upper or " UNIQUE" in upper or " REFERENCES " in upper:
            return ("contract", "a new column with a constraint (tighter)")
        return ("expand", "a new column, nullable or with a default")
    if head == "ALTER":
        if " SET NOT NULL" in upper:
            return ("contract", "makes a column required")
        if " DROP NOT NULL" in upper:
            return ("expand", "makes a column optional")
        if " DROP DEFAULT" in upper:
            return ("contract", "drops a default old code may rely on")
        if " SET DEFAULT" in upper:
            return ("expand", "sets a default")
        if " TYPE " in upper:
            return ("contract", "changes a column's type")
        if re.search(r"\bSET\s+(STATISTICS|STORAGE|COMPRESSION)\b|\bSET\s*\(", upper):
            return ("neutral", "storage setting")
        return ("unknown", "alters a column")
    if head in ("ENABLE", "DISABLE", "OWNER", "CLUSTER", "REPLICA", "FORCE", "NO"):
        return ("neutral", "table setting")
    if head == "SET":
        if " SCHEMA " in upper:
            return ("contract", "moves the table to another schema")
        return ("neutral", "table setting")
    if head == "RESET":
        return ("neutral", "table setting")
    return ("unknown", "an ALTER TABLE action Conveyor does not classify")


# --- Alembic, read (not run) --------------------------------------------------------------

_ALEMBIC: dict[str, tuple[Kind, str]] = {
    "create_table": ("expand", "a new table"),
    "create_index": ("expand", "a new index"),
    "create_table_comment": ("neutral", "a comment"),
    "drop_table_comment": ("neutral", "a comment"),
    "drop_constraint": ("expand", "drops a constraint (looser)"),
    "rename_table": ("contract", "renames a table"),
    "create_foreign_key": ("contract", "adds a constraint (tighter)"),
    "create_unique_constraint": ("contract", "adds a constraint (tighter)"),
    "create_check_constraint": ("contract", "adds a constraint (tighter)"),
    "create_primary_key": ("contract", "adds a constraint (tighter)"),
    "create_exclude_constraint": ("contract", "adds a constraint (tighter)"),
    "bulk_insert": ("neutral", "data"),
    "batch_alter_table": ("neutral", "a batch of the calls inside it"),
    "get_bind": ("neutral", "a connection"),
    "get_context": ("neutral", "the migration context"),
    "f": ("neutral", "a name"),
    "inline_literal": ("neutral", "a literal"),
}
_TABLE_ARG = {"create_index": 1, "drop_index": 1, "create_foreign_key": 1}
_TABLE_ARG.update(
    dict.fromkeys(("create_unique_constraint", "create_check_constraint", "create_primary_key"), 1)
)
_TABLE_ARG["drop_constraint"] = 1


def classify_alembic(source: str) -> Inferred:
    """The class of an Alembic revision from its ``upgrade()``'s ``op.*`` calls, without
    importing it (the server must not run a migration's code to read it; the gate renders
    it with ``alembic upgrade --sql`` and classifies that SQL instead)."""
    return worst(_op_verdicts(source, "upgrade"))


def has_alembic_undo(source: str) -> bool:
    """Whether ``downgrade()`` does anything (an ``op.*`` call), rather than ``pass``."""
    return bool(_op_verdicts(source, "downgrade"))


def alembic_revisions(source: str) -> tuple[str | None, str | None]:
    """(revision, down_revision) as the module assigns them; None where it does not."""
    revision = _REVISION.search(source)
    down = _DOWN_REVISION.search(source)
    return (
        revision.group(1) if revision else None,
        down.group(1) if down and down.group(1) else None,
    )


def _op_verdicts(source: str, function: str) -> list[Verdict]:
    lines = source.splitlines()
    start = next(
        (i for i, text in enumerate(lines) if re.match(rf"def\s+{function}\s*\(", text)), None
    )
    if start is None:
        return []
    end = next((i for i in range(start + 1, len(lines)) if re.match(r"\S", lines[i])), len(lines))
    body = "\n".join(lines[start:end])
    verdicts: list[Verdict] = []
    for match in _OP_CALL.finditer(body):
        line = start + 1 + body.count("\n", 0, match.start())
        args = _call_args(body, match.end())
        verdicts.extend(_op_call(match.group(1), args, line))
    return verdicts


def _op_call(name: str, args: str, line: int) -> list[Verdict]:
    shown = f"op.{name}({' '.join(args.split())[:80]})"
    literals = [_unquote(s) for s in _STRING.findall(args)]
    table_index = _TABLE_ARG.get(name, 0)
    table = identifier(literals[table_index]) if len(literals) > table_index else None
    if name == "execute":
        triple = _TRIPLE.search(args)
        sql = triple.group(1)[3:-3] if triple else (literals[0] if literals else None)
        if sql is None:
            return [Verdict(line, "unknown", "SQL built at run time", shown)]
        inner = classify_sql(sql)
        return [replace(v, line=line) for v in inner.verdicts] or [
            Verdict(line, "neutral", "no statement", shown)
        ]
    compact = args.replace(" ", "")
    if name == "add_column":
        if "nullable=False" in compact and "server_default=" not in compact:
            reason = "a required column without a default: old code's inserts fail"
            return [Verdict(line, "contract", reason, shown, table)]
        return [Verdict(line, "expand", "a new column, nullable or with a default", shown, table)]
    if name == "alter_column":
        if "new_column_name=" in compact:
            return [Verdict(line, "contract", "renames a column", shown, table)]
        if "type_=" in compact:
            return [Verdict(line, "contract", "changes a column's type", shown, table)]
        if "nullable=False" in compact:
            return [Verdict(line, "contract", "makes a column required", shown, table)]
        if "server_default=None" in compact:
            return [Verdict(line, "contract", "drops a default", shown, table)]
        if "nullable=True" in compact or "server_default=" in compact:
            return [Verdict(line, "expand", "loosens a column", shown, table)]
        return [Verdict(line, "unknown", "alters a column", shown, table)]
    if name in _ALEMBIC:
        kind, reason = _ALEMBIC[name]
        return [Verdict(line, kind, reason, shown, None if kind == "neutral" else table)]
    if name.startswith("drop_"):
        return [Verdict(line, "contract", f"drops a {name[5:].replace('_', ' ')}", shown, table)]
    return [Verdict(line, "unknown", f"op.{name} is not classified", shown, table)]


def _call_args(text: str, start: int) -> str:
    """The text between ``(`` (just before ``start``) and its matching ``)``."""
    depth, i, quote = 1, start, ""
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 2
                continue
            if text.startswith(quote, i):
                i += len(quote)
                quote = ""
                continue
        elif text.startswith(('"""', "'''"), i):
            quote = text[i : i + 3]
            i += 3
            continue
        elif ch in "'\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return text[start:i]
        i += 1
    return text[start:]


def _unquote(literal: str) -> str:
    return literal[1:-1].encode().decode("unicode_escape", errors="replace")
