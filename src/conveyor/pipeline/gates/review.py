"""The built-in migration review: squawk's lint, expand/contract classes, and the undos.

One verdict over every migration ``migration-safety`` found:

* each SQL migration, and each Alembic revision as ``alembic upgrade --sql`` renders it, is
  linted by squawk; a finding keeps the file, the line, squawk's rule, its message and its
  suggested fix, and blocks or is recorded as ``squawk.level`` says;
* each is classified expand or contract from its statements, checked against what it
  declares, and an expand without its undo is an error (``core.migrations.review``);
* what could not be checked (a Django migration, an Alembic revision that did not render, or
  everything when squawk is missing) keeps the verdict from ``success``: ``skipped``, with
  the reason, unless something already failed.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path

from conveyor.core.migrations import (
    Declaration,
    Migration,
    declaration,
    read_migrations,
    review,
    undo_candidates,
)
from conveyor.pipeline.gates import squawk
from conveyor.pipeline.gates.alembic_sql import Rendered, is_alembic, render
from conveyor.pipeline.gates.evidence import MAX_FINDINGS, Finding, GateEvidence, GateRequest

BUILTIN = "squawk"
DJANGO = "Django migrations are not rendered offline (that needs their database): not checked"


def review_migrations(request: GateRequest, migrations: tuple[str, ...]) -> GateEvidence:
    workdir = request.workdir
    sql = [m for m in migrations if m.endswith(".sql")]
    alembic = [m for m in migrations if is_alembic(m)]
    unchecked: dict[str, str] = {m: DJANGO for m in migrations if m not in sql + alembic}
    files = _texts(workdir, [*sql, *alembic])
    files.update(_texts(workdir, [u for m in sql for u in undo_candidates(m)]))
    rendered = render(workdir, alembic, request.environ) if alembic else Rendered()
    unchecked.update(rendered.problems)
    classified = read_migrations(
        files, rendered=rendered.upgrades, rendered_undo=rendered.downgrades
    )
    declared: Mapping[str, Declaration] = {m: declaration(m, files.get(m, "")) for m in files}
    findings = [
        Finding(p.file, p.line, p.rule, p.message, p.hint, p.level)
        for p in review(classified, declared)
    ]
    binary = squawk.find_squawk(request.environ)
    details: dict[str, str] = {f"class {m.file}": _class_note(m) for m in classified}
    if binary is None:
        unchecked.update(
            dict.fromkeys(sql + alembic, f"squawk is not installed ({squawk.INSTALL_HINT})")
        )
    else:
        details["squawk"] = squawk.version(binary)
        try:
            findings += _lint(binary, workdir, sql, rendered, classified)
        except squawk.SquawkFailed as exc:
            return GateEvidence(BUILTIN, "failure", str(exc), details=details)
    for name, why in sorted(unchecked.items()):
        details[f"not checked {name}"] = why
    if unchecked:
        details["unchecked"] = str(len(unchecked))
        details["why"] = sorted(set(unchecked.values()))[0]
    errors = [f for f in findings if f.level == "error"]
    warnings = len(findings) - len(errors)
    counts = _counts(classified)
    if errors:
        result = "failure"
    elif unchecked:
        result = "skipped"
    else:
        result = "success"
    summary = f"{len(migrations)} migrations ({counts}): {len(errors)} errors, {warnings} warnings"
    if unchecked:
        summary += f"; {len(unchecked)} not checked: {details['why']}"
    findings.sort(key=lambda f: (f.level != "error", f.file, f.line, f.detector))
    return GateEvidence(
        BUILTIN, result, summary, findings=tuple(findings[:MAX_FINDINGS]), details=details
    )


def _texts(workdir: Path, names: list[str]) -> dict[str, str]:
    texts = {}
    for name in names:
        path = workdir / name
        if path.is_file():
            texts[name] = path.read_text(encoding="utf-8", errors="replace")
    return texts


def _class_note(m: Migration) -> str:
    said = f"declared {m.declared}" if m.declared else "undeclared"
    note = f"{m.kind} ({said}, statements say {m.inferred})"
    if m.kind == "expand":
        note += f"; undo: {m.undo or 'none'}"
    if m.kind == "contract" and m.after:
        note += f"; completes {', '.join(m.after)}"
    return note


def _counts(classified: tuple[Migration, ...]) -> str:
    counts: dict[str, int] = {}
    for m in classified:
        counts[m.kind] = counts.get(m.kind, 0) + 1
    return ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items())) or "none classified"


def _lint(
    binary: Path,
    workdir: Path,
    sql: list[str],
    rendered: Rendered,
    classified: tuple[Migration, ...],
) -> list[Finding]:
    kinds = {m.file: m.kind for m in classified}
    with tempfile.TemporaryDirectory(prefix="conveyor-squawk-") as scratch:
        sources = {name: name for name in sql}
        for name, text in rendered.upgrades.items():
            target = Path(scratch) / (name.replace("/", "__") + ".sql")
            target.write_text(text)
            sources[str(target)] = name
        found = squawk.lint(binary, [Path(p) for p in sources], cwd=workdir)
    findings = []
    for f in found:
        name = sources.get(f.file, f.file)
        kind = kinds.get(name, "unknown")
        line, message = f.line, f.message
        if name in rendered.upgrades:
            line = _upgrade_line(workdir / name)
            message = f"{message} (in the SQL `alembic upgrade --sql` renders, line {f.line})"
        findings.append(
            Finding(
                name,
                line,
                f.rule,
                message,
                squawk.note(f, kind),
                squawk.level(f, kind),
                f.statement or None,
            )
        )
    return findings


def _upgrade_line(path: Path) -> int:
    """The line of ``def upgrade`` in an Alembic revision: where its SQL comes from."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return 1
    return next((i for i, line in enumerate(lines, 1) if line.startswith("def upgrade")), 1)
