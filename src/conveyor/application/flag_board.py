"""Flags as the dashboard shows them: one row per flag, one page per flag.

The rows and pages are frozen records built from ``Flags.current()`` (one read of the file
and the live flags for the whole list, no query per flag, so a few hundred flags render in
milliseconds) and the store's guarded rollouts. Who may press which button is answered here
with the same ``authorize`` the use cases run (deploy in each environment a change touches,
narrowed by the access policy), so a button is shown exactly when pressing it would pass.

A guarded rollout's verdict is the judge's (``core.flags.guarded.judge``) on the counts as
stored: the same inputs the last tick decided on, so the page shows what the server acted
on, not a second opinion.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from conveyor.application.access import Permission, authorize
from conveyor.application.caller import Caller
from conveyor.application.dashboard import may
from conveyor.application.flag_rollouts import FlagRollouts
from conveyor.application.flags import Flags, FlagSet
from conveyor.core.flags.guarded import GuardSpec, judge
from conveyor.core.flags.model import Flag, segment_to_json, state_to_json
from conveyor.errors import NotFound
from conveyor.store.records import EventRecord, FlagRolloutRecord

HISTORY = 100
"""Ledger events shown on a flag's page (newest first); the CLI and API page further."""


@dataclass(frozen=True)
class EnvCell:
    env: str
    on: bool
    rollout: int | None  # percentage of the environment-wide rollout, if any
    rules: int
    serves: str  # the variant served to everyone no rule or rollout picks
    guarded: bool  # a guarded rollout is walking this environment's percentage
    may_change: bool  # the viewer may turn it on or off here


@dataclass(frozen=True)
class FlagRow:
    key: str
    kind: str
    description: str
    default: str
    off: str
    source: str  # "file", "live" (differs from the file) or "live-only" (not in the file)
    cells: tuple[EnvCell, ...]

    @property
    def drifted(self) -> bool:
        return self.source != "file"


@dataclass(frozen=True)
class Board:
    environments: tuple[str, ...]
    rows: tuple[FlagRow, ...]

    @property
    def drifted(self) -> int:
        return sum(row.drifted for row in self.rows)


@dataclass(frozen=True)
class VariantCount:
    variant: str
    role: str  # "treatment", "control" or ""
    requests: int
    errors: int

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None


@dataclass(frozen=True)
class Progress:
    """One guarded rollout: where it is and what the judge says of its counts."""

    id: int
    env: str
    phase: str  # running | completed | aborted | stopped
    step: int  # 1-based
    steps: tuple[int, ...]
    percentage: int
    step_seconds: float
    step_started_at: float
    analysis: str
    counts: tuple[VariantCount, ...]
    verdict: str  # pass | fail | inconclusive (the judge's outcome)
    verdict_detail: str
    message: str
    created_by: str
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class FlagPage:
    row: FlagRow
    variants: tuple[tuple[str, Any], ...]
    states: tuple[tuple[str, dict[str, Any]], ...]  # environment, its state (canonical JSON)
    segments: tuple[tuple[str, dict[str, Any]], ...]  # the segments its rules use
    drift: tuple[dict[str, Any], ...]  # the live definition against the file's
    live_by: str | None
    history: tuple[EventRecord, ...]  # newest first
    rollouts: tuple[Progress, ...]  # newest first
    may_kill: bool  # deploy permission in every environment the kill switch touches


def board(flags: Flags, caller: Caller) -> Board:
    authorize(caller, Permission.READ, None, flags.policy())
    current = flags.current()
    guarded = _guarded(flags)
    policy = flags.policy()
    envs = _environments(current, current.flags.values())
    allowed = {env: may(caller, Permission.DEPLOY, env, policy) for env in envs}
    rows = tuple(_row(current, key, envs, guarded, allowed) for key in sorted(current.flags))
    return Board(envs, rows)


def flag_page(flags: Flags, rollouts: FlagRollouts, caller: Caller, key: str) -> FlagPage:
    authorize(caller, Permission.READ, None, flags.policy())
    current = flags.current()
    flag = current.flags.get(key)
    if flag is None:
        raise NotFound(f"unknown flag {key!r}", hint="the Flags page lists every flag")
    policy = flags.policy()
    envs = _environments(current, [flag])
    allowed = {env: may(caller, Permission.DEPLOY, env, policy) for env in envs}
    row = _row(current, key, envs, _guarded(flags), allowed)
    used = sorted({s for env in envs for r in flag.state(env).rules for s in r.segments})
    drift = flags.drift_of(current, key)
    live = current.live.get(key)
    history = flags.history(caller, key, HISTORY)
    records = rollouts.store.flag_rollouts(flag=key, limit=10)
    return FlagPage(
        row=row,
        variants=tuple(flag.variants.items()),
        states=tuple((env, state_to_json(flag.state(env))) for env in envs),
        segments=tuple(
            (name, segment_to_json(current.segments[name]))
            for name in used
            if name in current.segments
        ),
        drift=tuple(drift),
        live_by=live.updated_by if live is not None else None,
        history=tuple(reversed(history)),
        rollouts=tuple(progress(r) for r in records),
        may_kill=all(allowed.values()),
    )


def progress(record: FlagRolloutRecord) -> Progress:
    spec = GuardSpec.from_json(record.spec)
    status = record.status
    counts = {str(v): (int(c[0]), int(c[1])) for v, c in (status.get("counts") or {}).items()}
    verdict = judge(spec, counts)
    roles = {spec.treatment: "treatment", spec.control: "control"}
    rank = {spec.treatment: 0, spec.control: 1}  # treatment, control, then any other
    shown = sorted(set(counts) | set(rank), key=lambda v: (rank.get(v, 2), v))
    step = int(status.get("step", 0))
    return Progress(
        id=record.id,
        env=record.env,
        phase=record.phase,
        step=step + 1,
        steps=spec.steps,
        percentage=int(status.get("percentage", spec.steps[min(step, len(spec.steps) - 1)])),
        step_seconds=spec.step_seconds,
        step_started_at=float(status.get("step_started_at", record.created_at)),
        analysis=str(record.spec.get("analysis", "errors")),
        counts=tuple(VariantCount(v, roles.get(v, ""), *counts.get(v, (0, 0))) for v in shown),
        verdict=verdict.outcome,
        verdict_detail=verdict.detail,
        message=str(status.get("message") or ""),
        created_by=record.created_by,
        created_at=record.created_at,
        updated_at=record.updated_at,
    )


def _guarded(flags: Flags) -> set[tuple[str, str]]:
    return {(r.flag, r.env) for r in flags.store.flag_rollouts(running=True, limit=1000)}


def _environments(current: FlagSet, flags: Any) -> tuple[str, ...]:
    """The project's environments in their order, then any a flag names beyond them (the
    same set the kill switch turns off)."""
    envs = list(current.environments)
    extra = sorted({env for flag in flags for env in flag.environments} - set(envs))
    return tuple(envs + extra)


def _row(
    current: FlagSet,
    key: str,
    envs: tuple[str, ...],
    guarded: set[tuple[str, str]],
    allowed: dict[str, bool],
) -> FlagRow:
    flag: Flag = current.flags[key]
    source = "file" if key not in current.live else ("live" if key in current.file else "live-only")
    cells = []
    for env in envs:
        state = flag.state(env)
        cells.append(
            EnvCell(
                env=env,
                on=state.on,
                rollout=state.rollout.percentage if state.rollout is not None else None,
                rules=len(state.rules),
                serves=(state.serve or flag.default) if state.on else flag.off,
                guarded=(key, env) in guarded,
                may_change=allowed[env],
            )
        )
    return FlagRow(
        key=key,
        kind=flag.kind,
        description=flag.description,
        default=flag.default,
        off=flag.off,
        source=source,
        cells=tuple(cells),
    )
