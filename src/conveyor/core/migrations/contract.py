"""No contract while old code runs: which releases hold a contract back, and the barrier after.

A contract is refused while any environment runs, or keeps as a rollback target within the
horizon, a release that lacks the expand it completes; once it ran, releases lacking that
expand are no longer safe rollback targets.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from conveyor.core.migrations.files import Migration
from conveyor.core.migrations.spec import Horizon


@dataclass(frozen=True)
class ReleaseFacts:
    """What the contract rule needs to know of one release (newest first in a history)."""

    release_id: int
    name: str  # "catalog/staging r3"
    env: str
    revision: int
    phase: str
    finished_at: float | None
    migrations: frozenset[str] | None  # ids and aliases; None: made before migrations were known
    in_progress: bool = False


@dataclass(frozen=True)
class Held:
    """A release old code lives in: running, rolling out, or kept as a rollback target."""

    release: ReleaseFacts
    why: str

    def lacks(self, expand: Migration) -> bool:
        known = self.release.migrations
        return known is None or not (expand.names & known)


def held_releases(history: Sequence[ReleaseFacts], horizon: Horizon, now: float) -> list[Held]:
    """The releases of one environment that old code lives in (``history`` newest first):
    one rolling out, the one running, and the rollback targets within the horizon."""
    held: list[Held] = [Held(r, "is rolling out there") for r in history if r.in_progress]
    succeeded = [r for r in history if r.phase == "succeeded"]
    if not succeeded:
        return held
    current = succeeded[0]
    held.append(Held(current, "runs there"))
    replaced_at = current.finished_at
    for index, older in enumerate(succeeded[1:]):
        recent = replaced_at is not None and now - replaced_at <= horizon.age
        if index < horizon.releases or recent:
            held.append(Held(older, "is a rollback target there (within the rollback horizon)"))
        replaced_at = older.finished_at
    return held


@dataclass(frozen=True)
class Blocker:
    """A release old code lives in, and the expands (of a contract) it was built without."""

    contract: Migration
    expands: tuple[str, ...]
    held: Held

    @property
    def expand(self) -> str:
        return ", ".join(self.expands)

    def describe(self) -> str:
        known = self.held.release.migrations
        why = " (it records no migrations)" if known is None else ""
        return f"{self.held.release.name} {self.held.why}: built before {self.expand}{why}"


def contract_blockers(
    contracts: Sequence[Migration], migrations: Sequence[Migration], held: Sequence[Held]
) -> list[Blocker]:
    """Every release old code lives in that lacks an expand a contract completes, with what
    it lacks: while any remains, the contract would break code that may run again."""
    by_name = {name: m for m in migrations for name in m.names}
    blockers: list[Blocker] = []
    seen: set[int] = set()
    for h in held:
        if h.release.release_id in seen:
            continue
        for contract in contracts:
            expands = [by_name.get(n, Migration(n, n, "expand", "expand")) for n in contract.after]
            lacking = tuple(e.id for e in expands if h.lacks(e))
            if lacking:
                seen.add(h.release.release_id)
                blockers.append(Blocker(contract, lacking, h))
                break
    return blockers


@dataclass(frozen=True)
class Contracted:
    """A contract that ran in an environment (the ledger's ``schema.contracted``)."""

    contract: str
    expands: tuple[str, ...]
    by: str  # the release that ran it


def rollback_barrier(
    migrations: frozenset[str] | None,
    contracted: Sequence[Contracted],
    undone: Mapping[str, str],
) -> str | None:
    """Why code with these migrations may no longer run in an environment without migrating
    first, or None: the schema was contracted past an expand it lacks, or an expand it has
    was undone (``undone``: migration -> who undid it) and not applied again since."""
    for event in contracted:
        missing = [e for e in event.expands if migrations is None or e not in migrations]
        if missing:
            return (
                f"{event.by} ran the contract {event.contract}, and this release was built "
                f"before {', '.join(missing)}: its code needs the schema that contract removed"
            )
    for name, by in undone.items():
        if migrations is not None and name in migrations:
            return (
                f"the expand {name} it needs was undone by {by} and has not been applied "
                "since: its code needs what that expand added"
            )
    return None
