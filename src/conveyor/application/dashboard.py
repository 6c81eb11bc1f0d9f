"""What the web dashboard shows, shaped once here so its pages stay templates.

The dashboard (``server/dashboard/``) is another door to the same application: every page
is a question answered here with the caller's permission checked, and every button goes
through the same ``Application`` verb the API calls (a ledger event, the same checks).

The overview is the page that must stay fast at hundreds of services: it is built from two
store queries (the newest release and the newest succeeded release of every pair) and the
runtime's in-memory view of instances — no query per cell — and drift between environments
is computed from those rows, in promotion order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from conveyor.application.access import Permission, authorize
from conveyor.application.caller import Caller
from conveyor.application.policy import Policy
from conveyor.core.state import Phase, describe_step
from conveyor.errors import ConveyorError
from conveyor.store.records import EventRecord, GridRow, ReleaseRecord

LEDGER_PAGE = 200
"""Events on one page of the ledger view."""
PIPELINE_RUNS = 20
"""Pipeline runs the pipelines page shows (the newest)."""
PIPELINE_WINDOW = 5000
"""How far back (in ledger events) the pipelines page looks for runs."""


@dataclass(frozen=True)
class Cell:
    """One service in one environment, as the overview grid shows it."""

    service: str
    env: str
    release_id: int
    revision: int
    commit: str | None
    phase: str
    age: float
    ready: int
    desired: int
    serving_revision: int | None
    serving_commit: str | None
    canary_percent: int | None = None
    step: str | None = None
    message: str = ""
    drift: str | None = None  # "not in production yet", ...
    at: float = 0.0  # when the newest release was asked for (the age's origin)

    @property
    def signature(self) -> tuple[Any, ...]:
        """Everything drawn but the age (pages age their cells themselves)."""
        return tuple(v for k, v in self.__dict__.items() if k != "age")

    @property
    def in_progress(self) -> bool:
        return Phase(self.phase).in_progress

    @property
    def css(self) -> str:
        """The class a cell is drawn with: its phase, plus what must stand out."""
        names = [f"phase-{self.phase.replace('_', '-')}"]
        if self.in_progress:
            names.append("moving")
        if self.phase in ("rolled_back", "failed", "rolling_back"):
            names.append("alarm")
        if self.phase == "pending_approval":
            names.append("waiting")
        if self.drift:
            names.append("drift")
        return " ".join(names)


@dataclass(frozen=True)
class Overview:
    services: list[str]
    envs: list[str]
    cells: Mapping[tuple[str, str], Cell]
    drift: Mapping[str, list[str]]
    config_problem: str | None = None

    @property
    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for cell in self.cells.values():
            out[cell.phase] = out.get(cell.phase, 0) + 1
        return out


def overview(
    latest: Sequence[GridRow],
    current: Sequence[GridRow],
    *,
    services: Sequence[str],
    envs: Sequence[str],
    ready: Callable[[str, str, str], int],
    now: float,
) -> Overview:
    """The grid from the newest and the newest succeeded release of every pair.

    ``services`` and ``envs`` are the config's (envs in promotion order); pairs the store
    knows beyond them are added after. ``ready(service, env, template)`` counts ready
    instances of a version (in memory).
    """
    serving = {(r.service, r.env): r for r in current}
    cells: dict[tuple[str, str], Cell] = {}
    all_services = list(dict.fromkeys([*services, *(r.service for r in latest)]))
    all_envs = list(dict.fromkeys([*envs, *(r.env for r in latest)]))
    for row in latest:
        good = serving.get((row.service, row.env))
        shown = row if good is None or row.phase != Phase.ROLLED_BACK else good
        step, percent = canary_share(row)
        cells[(row.service, row.env)] = Cell(
            service=row.service,
            env=row.env,
            release_id=row.id,
            revision=row.revision,
            commit=row.commit,
            phase=row.phase.value,
            age=max(0.0, now - row.created_at),
            at=row.created_at,
            ready=ready(row.service, row.env, shown.template),
            desired=shown.instances,
            serving_revision=good.revision if good is not None else None,
            serving_commit=good.commit if good is not None else None,
            canary_percent=percent,
            step=step,
            message=row.status.message,
        )
    drift: dict[str, list[str]] = {}
    for service in all_services:
        notes = drift_of(service, all_envs, cells)
        if notes:
            drift[service] = [text for _, text in notes]
            for env, text in notes:
                cell = cells[(service, env)]
                cells[(service, env)] = _with_drift(cell, text)
    return Overview(all_services, all_envs, cells, drift)


def canary_share(row: GridRow) -> tuple[str | None, int | None]:
    """A canary in progress: its step and the share of users on the new version."""
    if row.strategy.kind != "canary" or not row.phase.in_progress:
        return None, None
    steps, index = row.strategy.steps, row.status.step_index
    step = (
        f"{index + 1}/{len(steps)} {describe_step(steps[index])}"
        if index < len(steps)
        else "promoting"
    )
    total = sum(row.status.weights.values()) or 1
    return step, round(100 * row.status.weights.get(row.template, 0) / total)


def drift_of(
    service: str, envs: Sequence[str], cells: Mapping[tuple[str, str], Cell]
) -> list[tuple[str, str]]:
    """(env, note) for each environment whose serving commit the next one does not run."""
    notes: list[tuple[str, str]] = []
    placed = [(env, cells[(service, env)]) for env in envs if (service, env) in cells]
    for (env, cell), (after, later) in pairwise(placed):
        mine, theirs = cell.serving_commit, later.serving_commit
        if mine and mine != theirs:
            runs = f"{theirs[:7]}" if theirs else "nothing yet"
            notes.append((env, f"{env} runs {mine[:7]}, {after} runs {runs}"))
    return notes


def _with_drift(cell: Cell, text: str) -> Cell:
    return Cell(**{**cell.__dict__, "drift": text})


# --- one service in one environment --------------------------------------------------------


@dataclass(frozen=True)
class Step:
    index: int
    text: str
    state: str  # done | current | todo


@dataclass(frozen=True)
class Rollout:
    """The service page's live part: everything that moves during a rollout."""

    release: ReleaseRecord
    steps: list[Step]
    weights: list[tuple[str, int, int | None]]  # (version, percent, revision)
    instances: list[dict[str, Any]]
    analysis: list[dict[str, Any]]
    controls: list[str] = field(default_factory=list)


def rollout(
    release: ReleaseRecord,
    instances: Iterable[Any],
    *,
    revisions: Mapping[str, int],
    controls: Sequence[str] = (),
) -> Rollout:
    strategy = release.plan.strategy
    index = release.status.step_index
    steps: list[Step] = []
    if strategy.kind == "canary":
        for i, step in enumerate(strategy.steps):
            state = "done" if i < index else ("current" if i == index else "todo")
            if release.phase.terminal:
                state = "done" if release.phase == Phase.SUCCEEDED or i < index else "todo"
            steps.append(Step(i + 1, describe_step(step), state))
    total = sum(release.status.weights.values()) or 1
    weights = [
        (version, round(100 * w / total), revisions.get(version))
        for version, w in sorted(
            release.status.weights.items(), key=lambda kv: (kv[0] != release.template, -kv[1])
        )
    ]
    return Rollout(
        release=release,
        steps=steps,
        weights=weights,
        instances=[
            {
                "id": i.instance_id,
                "revision": i.revision,
                "version": i.version,
                "state": i.state,
                "ready": i.ready,
                "restarts": i.restarts,
                "probe": i.last_probe.detail if i.last_probe else None,
            }
            for i in instances
        ],
        analysis=analysis_runs(release.analysis),
        controls=list(controls),
    )


def analysis_runs(stored: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each analysis run with its metrics' measurements (newest last) and verdicts."""
    runs = []
    for key, run in stored.items():
        if not isinstance(run, Mapping):
            continue
        results = run.get("results") if isinstance(run.get("results"), Mapping) else {}
        metrics = []
        for name, measured in (results or {}).items():
            rows = (
                [m for m in measured if isinstance(m, Mapping)]
                if isinstance(measured, list)
                else []
            )
            metrics.append(
                {
                    "name": name,
                    "measurements": [
                        {
                            "phase": m.get("phase"),
                            "value": m.get("value"),
                            "message": m.get("message"),
                        }
                        for m in rows[-12:]
                    ],
                    "count": len(rows),
                    "last": rows[-1].get("phase") if rows else None,
                }
            )
        runs.append(
            {
                "key": key,
                "summary": run.get("summary") or run.get("phase"),
                "terminated": run.get("terminated"),
                "metrics": metrics,
            }
        )
    return runs


def allowed_controls(caller: Caller, release: ReleaseRecord, policy: Policy) -> list[str]:
    """The buttons ``caller`` may press now: what their role allows, and what makes sense in
    the release's phase (the use case checks both again when pressed)."""
    if not may(caller, Permission.DEPLOY, release.env, policy):
        return []
    if release.phase == Phase.PENDING_APPROVAL:
        return ["rollback"]  # withdraws the request
    if release.phase.in_progress and release.phase != Phase.ROLLING_BACK:
        held = release.status.paused is not None
        shown = ["promote", "resume" if held else "pause", "abort"]
        if release.plan.strategy.kind != "canary":
            shown = ["abort"]
        return shown
    if release.phase.terminal and release.revision > 1:
        return ["rollback"]
    return []


def may(caller: Caller, permission: Permission, env: str | None, policy: Policy) -> bool:
    try:
        authorize(caller, permission, env, policy)
    except ConveyorError:
        return False
    return True


# --- pipelines ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    name: str
    result: str | None
    duration: float | None
    needs: tuple[str, ...]
    level: int


@dataclass(frozen=True)
class PipelineRun:
    run: str
    started_at: float
    actor: str
    commit: str | None
    branch: str | None
    result: str | None  # None: still running (or never closed)
    duration: float | None
    columns: list[list[Job]]
    artifacts: Mapping[str, str]


def pipeline_runs(
    events: Sequence[EventRecord], needs: Mapping[str, Sequence[str]], limit: int = PIPELINE_RUNS
) -> list[PipelineRun]:
    """Runs from their ``pipeline.started``/``pipeline.finished`` events, newest first, each
    laid out as its DAG: one column per level of ``needs`` (from the pipeline as declared)."""
    started: dict[str, EventRecord] = {}
    finished: dict[str, EventRecord] = {}
    for event in events:
        run = event.details.get("run")
        if not isinstance(run, str):
            continue
        if event.kind == "pipeline.started":
            started[run] = event
        elif event.kind == "pipeline.finished":
            finished[run] = event
    runs = []
    for run, start in sorted(started.items(), key=lambda kv: -kv[1].seq)[:limit]:
        end = finished.get(run)
        names = [str(j) for j in start.details.get("jobs") or []]
        results = dict(end.details.get("jobs") or {}) if end else {}
        durations = dict(end.details.get("durations") or {}) if end else {}
        names += [n for n in results if n not in names]
        runs.append(
            PipelineRun(
                run=run,
                started_at=start.at,
                actor=start.actor,
                commit=start.details.get("commit"),
                branch=start.details.get("branch"),
                result=end.details.get("result") if end else None,
                duration=end.details.get("duration_seconds") if end else None,
                columns=dag_columns(names, needs, results, durations),
                artifacts=dict(end.details.get("artifacts") or {}) if end else {},
            )
        )
    return runs


def dag_columns(
    names: Sequence[str],
    needs: Mapping[str, Sequence[str]],
    results: Mapping[str, Any],
    durations: Mapping[str, Any],
) -> list[list[Job]]:
    """Jobs in columns by depth: a job sits one column right of the deepest job it needs.
    A matrix job (``test (py=3.12)``) takes the needs of the job it expands."""
    level: dict[str, int] = {}
    known = set(names)

    def needs_of(name: str) -> tuple[str, ...]:
        base = needs.get(name, needs.get(name.split(" ", 1)[0], ()))
        expanded = [n for n in known if n == name.split(" ", 1)[0] and n != name]
        deps = [
            other
            for need in base
            for other in known
            if other == need or other.split(" ", 1)[0] == need
        ]
        return tuple(dict.fromkeys(d for d in deps if d not in expanded))

    def depth(name: str, seen: frozenset[str] = frozenset()) -> int:
        if name in level:
            return level[name]
        if name in seen:  # a cycle cannot be declared; be safe anyway
            return 0
        deps = needs_of(name)
        value = 1 + max((depth(d, seen | {name}) for d in deps), default=-1)
        level[name] = value
        return value

    columns: dict[int, list[Job]] = {}
    for name in names:
        d = depth(name)
        duration = durations.get(name)
        columns.setdefault(d, []).append(
            Job(
                name=name,
                result=results.get(name),
                duration=float(duration) if isinstance(duration, int | float) else None,
                needs=needs_of(name),
                level=d,
            )
        )
    return [columns[k] for k in sorted(columns)]


# --- the ledger -----------------------------------------------------------------------------


def filter_events(
    events: Iterable[EventRecord], *, kind: str | None, actor: str | None
) -> list[EventRecord]:
    """Narrow by kind prefix (``approval.`` or ``release.created``) and actor."""
    out = []
    for event in events:
        if kind and not event.kind.startswith(kind):
            continue
        if actor and event.actor.lower() != actor.lower():
            continue
        out.append(event)
    return out
