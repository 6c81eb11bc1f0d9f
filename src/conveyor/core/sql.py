"""SQL text cut into statements, each with the line it starts on: enough to classify, no more.

Classifying a migration (``core.migrations``) needs to know where one statement ends and
the next begins, and what each one's first words are; it does not need a parser. PostgreSQL's
lexical rules that decide statement boundaries are few: ``--`` and (nested) ``/* */``
comments, single-quoted strings (``''`` inside, backslash escapes in ``E''``), double-quoted
identifiers and dollar-quoted bodies (``$$ ... $$``, ``$fn$ ... $fn$``). A ``;`` outside all
of them ends a statement. Judging whether a statement is *safe* is squawk's job (the gate
runs the real linter); this module only finds the statements.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_DOLLAR = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class SqlStatement:
    """One statement: the line it starts on (1-based), its text without comments, on one line."""

    line: int
    text: str

    @property
    def upper(self) -> str:
        return self.text.upper()


def split_statements(sql: str) -> list[SqlStatement]:
    """Every statement of ``sql`` in order; comments dropped, whitespace folded to one space."""
    statements: list[SqlStatement] = []
    buffer: list[str] = []
    start_line: int | None = None
    line = 1
    i, n = 0, len(sql)

    def flush() -> None:
        nonlocal start_line
        text = _SPACE.sub(" ", "".join(buffer)).strip()
        if text and start_line is not None:
            statements.append(SqlStatement(start_line, text))
        buffer.clear()
        start_line = None

    while i < n:
        ch = sql[i]
        if sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end < 0 else end
            continue
        if sql.startswith("/*", i):
            i, line = _skip_block_comment(sql, i, line)
            buffer.append(" ")
            continue
        if ch == ";":
            flush()
            i += 1
            continue
        if ch == "\n":
            line += 1
            buffer.append(ch)
            i += 1
            continue
        if start_line is None and not ch.isspace():
            start_line = line
        if ch in ("'", '"'):
            escapes = ch == "'" and i > 0 and sql[i - 1] in "eE"
            end = _quoted_end(sql, i, ch, escapes)
            piece = sql[i:end]
            buffer.append(piece)
            line += piece.count("\n")
            i = end
            continue
        if ch == "$":
            match = _DOLLAR.match(sql, i)
            if match is not None and not (i > 0 and (sql[i - 1].isalnum() or sql[i - 1] == "_")):
                tag = match.group(0)
                close = sql.find(tag, match.end())
                end = n if close < 0 else close + len(tag)
                piece = sql[i:end]
                buffer.append(piece)
                line += piece.count("\n")
                i = end
                continue
        buffer.append(ch)
        i += 1
    flush()
    return statements


def _skip_block_comment(sql: str, i: int, line: int) -> tuple[int, int]:
    """Past the (possibly nested) comment opening at ``i``; with the line count updated."""
    depth, n = 0, len(sql)
    while i < n:
        if sql.startswith("/*", i):
            depth += 1
            i += 2
        elif sql.startswith("*/", i):
            depth -= 1
            i += 2
            if depth == 0:
                return i, line
        else:
            if sql[i] == "\n":
                line += 1
            i += 1
    return n, line


def _quoted_end(sql: str, i: int, quote: str, escapes: bool) -> int:
    """The index just past the quoted text opening at ``i`` (doubled quotes stay inside)."""
    j, n = i + 1, len(sql)
    while j < n:
        if escapes and sql[j] == "\\":
            j += 2
            continue
        if sql[j] == quote:
            if j + 1 < n and sql[j + 1] == quote:
                j += 2
                continue
            return j + 1
        j += 1
    return n


def identifier(text: str) -> str:
    """A (possibly schema-qualified, possibly quoted) name as compared: last part, unquoted,
    lower case unless it was quoted."""
    last = text.strip().rstrip(";").split(".")[-1].strip()
    if len(last) >= 2 and last[0] == last[-1] == '"':
        return last[1:-1].replace('""', '"')
    return last.lower()
