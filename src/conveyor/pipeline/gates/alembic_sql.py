"""Alembic revisions rendered to SQL offline (``alembic upgrade --sql``), one chunk per file.

squawk reads SQL, and an Alembic revision is Python; Alembic's offline mode prints the SQL
a revision would run without connecting to a database, which is exactly what the linter
and the classifier need. One ``upgrade heads --sql`` and one ``downgrade heads:base --sql``
per Alembic script directory render every revision; the ``-- Running upgrade A -> B``
markers Alembic writes say which chunk is whose. The downgrade's chunk is the revision's
undo: one that renders to nothing does not undo anything.

The project's ``env.py`` must support offline mode (Alembic's template does) and be able to
run where the pipeline runs; when it cannot, the revisions are reported as not rendered,
with Alembic's own last words, and the gate does not pass them.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from conveyor.core.migrations import alembic_revisions

TIMEOUT = 120.0
_MARKER = re.compile(r"^-- Running (upgrade|downgrade) (.*?) -> (.*?)\s*$")


@dataclass(frozen=True)
class Rendered:
    upgrades: dict[str, str] = field(default_factory=dict)  # migration (as shown) -> SQL
    downgrades: dict[str, str] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)  # migration -> why not rendered


def is_alembic(shown: str) -> bool:
    return shown.endswith(".py") and Path(shown).parent.name == "versions"


def render(workdir: Path, migrations: Sequence[str], environ: Mapping[str, str]) -> Rendered:
    """Every Alembic revision among ``migrations`` (paths relative to ``workdir``) as SQL."""
    rendered = Rendered()
    groups: dict[Path, list[str]] = {}
    for name in migrations:
        if is_alembic(name):
            groups.setdefault((workdir / name).parent, []).append(name)
    for versions, shown in groups.items():
        ini = _config(versions, workdir)
        if ini is None:
            why = (
                f"no alembic.ini above {versions.relative_to(workdir)}: Alembic revisions are "
                "checked as the SQL `alembic upgrade --sql` renders"
            )
            rendered.problems.update(dict.fromkeys(shown, why))
            continue
        by_revision = {}
        for name in shown:
            revision, _ = alembic_revisions((workdir / name).read_text(errors="replace"))
            if revision:
                by_revision[revision] = name
        for direction, target, out in (
            ("upgrade", "heads", rendered.upgrades),
            ("downgrade", "heads:base", rendered.downgrades),
        ):
            text, problem = _alembic(ini, direction, target, environ)
            if problem is not None:
                for name in shown:
                    rendered.problems.setdefault(name, problem)
                continue
            for revision, sql in _chunks(text, direction).items():
                if revision in by_revision:
                    out[by_revision[revision]] = sql
    return rendered


def _config(versions: Path, workdir: Path) -> Path | None:
    """The alembic.ini of a versions folder: in its script directory or a parent of it."""
    root = workdir.resolve()
    for directory in (versions.parent, *versions.parent.parents):
        if (directory / "alembic.ini").is_file():
            return directory / "alembic.ini"
        if directory.resolve() == root:
            break
    return None


def _alembic(
    ini: Path, direction: str, target: str, environ: Mapping[str, str]
) -> tuple[str, str | None]:
    found = shutil.which("alembic", path=environ.get("PATH"))
    program = [found] if found else [sys.executable, "-m", "alembic"]
    command = [*program, "-c", ini.name, direction, target, "--sql"]
    try:
        done = subprocess.run(
            command,
            cwd=ini.parent,
            env={**environ, "CONVEYOR_MIGRATION_RENDER": "1"},
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return "", f"`alembic {direction} {target} --sql` could not run: {exc}"
    if done.returncode != 0:
        said = [line for line in done.stderr.strip().splitlines() if line.strip()]
        last = said[-1] if said else f"exit {done.returncode}"
        return "", f"`alembic {direction} {target} --sql` failed: {last}"
    return done.stdout, None


def _chunks(text: str, direction: str) -> dict[str, str]:
    """Revision -> the SQL between its marker and the next (Alembic's bookkeeping blanked,
    lines kept, so squawk's line numbers are the rendered text's)."""
    chunks: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        match = _MARKER.match(line)
        if match is not None:
            revision = match.group(3) if direction == "upgrade" else match.group(2)
            current = chunks.setdefault(revision.strip(), [])
            current.append(f"-- {direction} of {revision.strip()}")
            continue
        if current is None:
            continue
        if "alembic_version" in line or line.strip().upper() in ("BEGIN;", "COMMIT;"):
            current.append("")
            continue
        current.append(line)
    return {revision: "\n".join(lines) + "\n" for revision, lines in chunks.items()}
