"""squawk, the PostgreSQL migration linter, run as its real binary (the ``squawk-cli`` package).

Conveyor does not reimplement squawk's rules; it runs ``squawk --reporter json`` and decides
only what blocks. squawk reports every rule as a warning, so the line between "refuse" and
"record" is drawn here (``level``), by what a rule protects:

* **errors** (the gate fails): what takes a lock that stops writers for as long as the
  table is scanned or rewritten (a non-concurrent index, a required column without a
  default, a type change, a validated constraint, ...), what cannot run at all (a syntax
  error, ``CONCURRENTLY`` inside a transaction), and what breaks code still running (drops
  and renames) — except in a migration that is a *contract*, where breaking old code is the
  point and the release-time rule (no contract while old code runs) is the guard instead;
* **warnings** (recorded): style and robustness advice (``prefer-robust-stmts``,
  ``prefer-bigint-over-int``, ...), and the timeout rules, since Conveyor's ``migrate:`` step
  sets ``lock_timeout`` and ``statement_timeout`` itself.

A project tunes squawk as squawk users do, with its ``.squawk.toml`` (``excluded_rules``,
``pg_version``), which squawk reads from the directory the gate runs in; files are excused
with the gate's ``allow:``.

Where squawk is found: ``CONVEYOR_SQUAWK`` (a path) if set, else ``squawk`` on the job's
PATH, else beside the Python running Conveyor (where ``pip install squawk-cli`` puts it).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from conveyor.core.migrations import Kind

SQUAWK_ENV = "CONVEYOR_SQUAWK"
INSTALL_HINT = "pip install squawk-cli (next to Conveyor), or point CONVEYOR_SQUAWK at squawk"
TIMEOUT = 120.0

BLOCKING = frozenset(
    {
        "syntax-error",
        "adding-required-field",
        "adding-not-nullable-field",
        "adding-field-with-default",
        "adding-foreign-key-constraint",
        "adding-primary-key-constraint",
        "adding-serial-primary-key-field",
        "changing-column-type",
        "constraint-missing-not-valid",
        "disallowed-unique-constraint",
        "require-concurrent-index-creation",
        "require-concurrent-index-deletion",
        "ban-concurrent-index-creation-in-transaction",
        "ban-alter-domain-with-add-constraint",
        "ban-create-domain-with-constraint",
        "ban-uncommitted-transaction",
        "ban-truncate-cascade",
        "ban-drop-database",
        "transaction-nesting",
        "ban-drop-column",
        "ban-drop-table",
        "ban-drop-function",
        "renaming-column",
        "renaming-table",
    }
)
"""Rules whose findings fail the gate (see the module docstring)."""
CONTRACTING = frozenset(
    {"ban-drop-column", "ban-drop-table", "ban-drop-function", "renaming-column", "renaming-table"}
)
"""Rules that flag breaking old code: a contract's purpose, guarded at release time instead."""
SET_BY_CONVEYOR = frozenset(
    {"require-lock-timeout", "require-statement-timeout", "require-timeout-settings"}
)


class SquawkFailed(Exception):
    """squawk ran but gave no answer Conveyor can read (the message says what it printed)."""


@dataclass(frozen=True)
class SquawkFinding:
    file: str  # as given to squawk
    line: int  # 1-based
    rule: str
    level: str  # squawk's own: "Warning" or "Error"
    message: str
    help: str | None
    statement: str  # the lines squawk pointed at


def find_squawk(environ: Mapping[str, str]) -> Path | None:
    """The squawk binary this gate should run, or None when there is none."""
    configured = environ.get(SQUAWK_ENV)
    if configured is not None:
        path = Path(configured)
        return path if configured and path.is_file() else None
    on_path = shutil.which("squawk", path=environ.get("PATH"))
    if on_path:
        return Path(on_path)
    for directory in (Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))):
        candidate = directory / "squawk"
        if candidate.is_file():
            return candidate
    return None


def version(binary: Path) -> str:
    try:
        done = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return "squawk"
    return done.stdout.strip() or "squawk"


def lint(binary: Path, files: Sequence[Path], *, cwd: Path) -> list[SquawkFinding]:
    """squawk's findings about ``files`` (none: clean); SquawkFailed if it could not say."""
    if not files:
        return []
    try:
        done = subprocess.run(
            [str(binary), "--reporter", "json", *(str(f) for f in files)],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise SquawkFailed(f"squawk did not finish within {TIMEOUT:g}s") from None
    except OSError as exc:
        raise SquawkFailed(f"squawk could not be started: {exc}") from None
    try:
        found = json.loads(done.stdout or "[]")
    except ValueError:
        said = (done.stderr or done.stdout).strip().splitlines()
        raise SquawkFailed(
            f"squawk exited {done.returncode}: {said[-1] if said else 'no output'}"
        ) from None
    if not isinstance(found, list):
        raise SquawkFailed("squawk's JSON report is not a list")
    texts: dict[str, list[str]] = {}
    findings = []
    for item in found:
        name = str(item.get("file", ""))
        if name not in texts:
            texts[name] = _lines(cwd, name)
        first, last = int(item.get("line", 0)), int(item.get("line_end", item.get("line", 0)))
        statement = " ".join(" ".join(texts[name][first : last + 1]).split())
        findings.append(
            SquawkFinding(
                file=name,
                line=first + 1,  # squawk counts lines from 0
                rule=str(item.get("rule_name", "squawk")),
                level=str(item.get("level", "Warning")),
                message=str(item.get("message", "")),
                help=item.get("help") or None,
                statement=statement[:300],
            )
        )
    return findings


def _lines(cwd: Path, name: str) -> list[str]:
    try:
        return (cwd / name).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []


def level(finding: SquawkFinding, kind: Kind) -> str:
    """ "error" (blocks) or "warning" (recorded) for a finding in a migration of ``kind``."""
    if finding.level.lower() == "error" or finding.rule == "syntax-error":
        return "error"
    if finding.rule in CONTRACTING and kind == "contract":
        return "warning"
    return "error" if finding.rule in BLOCKING else "warning"


def note(finding: SquawkFinding, kind: Kind) -> str | None:
    """squawk's suggested fix, with what Conveyor does about the rule when that matters."""
    extra = None
    if finding.rule in SET_BY_CONVEYOR:
        extra = "Conveyor's migrate: step sets lock_timeout and statement_timeout for you"
    elif finding.rule in CONTRACTING and kind == "contract":
        extra = "allowed in a contract: Conveyor refuses it while code that needs it may run"
    elif finding.rule in CONTRACTING:
        extra = "old code breaks on this: do it in a later migration declared contract"
    parts = [p for p in (finding.help, extra) if p]
    return "; ".join(parts) or None
