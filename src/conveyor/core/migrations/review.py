"""The gate's review of a project's migrations: declarations checked, undos required.

Pure: the gate (``pipeline/gates/migrations.py``) reads the files and runs squawk; this module
says which problems block and how to fix each.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from conveyor.core.migrations.files import Declaration, Migration, undo_candidates


@dataclass(frozen=True)
class Problem:
    """Something wrong with a migration, as a gate finding: where, which rule, what, the fix."""

    file: str
    line: int
    rule: str
    level: str  # "error" blocks the gate; "warning" is recorded
    message: str
    hint: str


def review(
    migrations: Sequence[Migration], declarations: Mapping[str, Declaration]
) -> list[Problem]:
    """What the gate holds against the migrations' classes and undos (squawk judges the SQL)."""
    problems: list[Problem] = []
    known = {name for m in migrations for name in m.names}
    for m in migrations:
        said = declarations.get(m.file, Declaration())
        line = said.line or 1
        if said.conflict:
            problems.append(
                Problem(
                    m.file,
                    line,
                    "conveyor-declaration-conflict",
                    "error",
                    f"the comment declares {said.kind} but the file name says {said.by_name}",
                    "make them agree: rename the file or fix the `conveyor:` comment",
                )
            )
        if said.declared == "expand" and m.inferred == "contract":
            problems.append(
                Problem(
                    m.file,
                    line,
                    "conveyor-expand-contracts",
                    "error",
                    f"declared expand, but it contracts the schema: {'; '.join(m.reasons)}",
                    "old code breaks on this: move these statements to a later migration "
                    "declared `-- conveyor: contract`, shipped once no release needs the old "
                    "schema",
                )
            )
        if said.declared == "contract" and m.inferred in ("expand", "neutral"):
            problems.append(
                Problem(
                    m.file,
                    line,
                    "conveyor-contract-without-contraction",
                    "warning",
                    f"declared contract, but its statements only {m.inferred} the schema",
                    "it is treated as a contract (refused while old code runs); declare it "
                    "expand if that is what it is",
                )
            )
        if said.declared is None and m.inferred == "unknown":
            problems.append(
                Problem(
                    m.file,
                    1,
                    "conveyor-unclassified",
                    "error",
                    f"cannot tell whether it expands or contracts the schema: "
                    f"{'; '.join(m.reasons)}",
                    "declare it: a first line `-- conveyor: expand` (old code keeps working) or "
                    "`-- conveyor: contract` (`# conveyor: ...` in Python)",
                )
            )
        if m.kind == "expand" and m.undo is None:
            where = (
                "a downgrade() that reverses it"
                if m.file.endswith(".py")
                else f"{undo_candidates(m.file)[0]} beside it"
            )
            problems.append(
                Problem(
                    m.file,
                    line,
                    "conveyor-expand-without-undo",
                    "error",
                    "an expand must come with its undo, and this one has none",
                    f"add {where}; `conveyor migrate undo` runs it on purpose",
                )
            )
        for name in m.after:
            if name not in known:
                problems.append(
                    Problem(
                        m.file,
                        line,
                        "conveyor-unknown-expand",
                        "error",
                        f"completes {name!r}, which is not a migration here",
                        f"name the expand's id (its file name without .sql/.py): one of "
                        f"{', '.join(sorted(known)) or 'none'}",
                    )
                )
        if m.kind == "contract" and not m.after:
            problems.append(
                Problem(
                    m.file,
                    line,
                    "conveyor-contract-without-expand",
                    "warning",
                    "a contract with no expand before it: nothing tells which releases still "
                    "need the old schema",
                    "declare the expand it completes: `-- conveyor: contract after ID`",
                )
            )
    return problems
