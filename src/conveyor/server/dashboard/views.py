"""The dashboard's pages as data: each view names its template and builds its context.

A view's context is computed the same way for the first render and for each update its
Server-Sent Events stream sends, so a page without JavaScript and a live page show the
same thing. Contexts are built off the event loop (they read the store).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from conveyor.application import Application, Caller
from conveyor.application.access import Permission
from conveyor.application.dashboard import LEDGER_PAGE, filter_events
from conveyor.application.flag_board import board, flag_page
from conveyor.core.approval import authors_of, is_author
from conveyor.core.slo import window_name
from conveyor.errors import UsageError

Context = Callable[[Application, Caller, Mapping[str, str], Mapping[str, str]], dict[str, Any]]

LEDGER_WINDOW = 5000
"""Events read per ledger page before filtering by kind and actor."""


@dataclass(frozen=True)
class View:
    name: str
    path: str  # under /ui; the stream is /ui/stream + the same path
    template: str
    context: Context
    always: bool = False  # re-render every period (instances move without ledger events)
    period: float = 1.0
    title: str = ""
    # A cheap look at state that moves without ledger events: re-render when it changes
    # (checked every period), so a page need not be ``always`` for a part that rarely moves.
    watch: Callable[[Application, Mapping[str, str]], object] | None = None


def overview_context(
    app: Application, caller: Caller, params: Mapping[str, str], query: Mapping[str, str]
) -> dict[str, Any]:
    return {"ov": app.overview(caller)}


def service_context(
    app: Application, caller: Caller, params: Mapping[str, str], query: Mapping[str, str]
) -> dict[str, Any]:
    service, env = params["service"], params["env"]
    view, history = app.rollout(caller, service, env)
    since = view.release.created_at - 30 if view is not None else 0.0
    chart = app.traffic.series(service, env, since)
    revisions = {r.template: r.revision for r in reversed(history)}
    order = [v for v, _, _ in view.weights] if view is not None else []
    rank = {v: i for i, v in enumerate(order)}
    versions = sorted(chart["versions"], key=lambda v: rank.get(v, len(rank)))
    chart["order"] = versions
    chart["labels"] = {v: f"r{revisions[v]}" if v in revisions else v[:10] for v in versions}
    return {
        "service": service,
        "env": env,
        "view": view,
        "history": history,
        "chart": chart,
        "traffic_now": [
            {"label": chart["labels"][v], **{k: _last(chart["versions"][v][k]) for k in METRICS}}
            for v in versions
        ],
    }


METRICS = ("rps", "errors", "latency_ms")


def _last(points: list[float | None]) -> float | None:
    """The newest value of a series (the table beside the charts)."""
    for value in reversed(points[-5:]):
        if value is not None:
            return value
    return None


def release_context(
    app: Application, caller: Caller, params: Mapping[str, str], query: Mapping[str, str]
) -> dict[str, Any]:
    release_id = _id(params["release_id"])
    release = app.release(caller, release_id)
    evidence = app.evidence(caller, str(release_id))
    changes = app.approval_page(caller, release_id)["changes"]
    return {"release": release, "evidence": evidence, "changes": changes}


def approvals_context(
    app: Application, caller: Caller, params: Mapping[str, str], query: Mapping[str, str]
) -> dict[str, Any]:
    return {"waiting": app.pending_approvals(caller)}


def approval_context(
    app: Application, caller: Caller, params: Mapping[str, str], query: Mapping[str, str]
) -> dict[str, Any]:
    release_id = _id(params["release_id"])
    release = app.release(caller, release_id)
    page = app.approval_page(caller, release_id)
    approval = page["approval"]
    rule = release.plan.approval
    own = bool(
        rule is not None
        and rule.prevent_self_review
        and is_author(caller.actor, authors_of(release.actor, release.plan.authors))
    )
    expires = approval.get("expires_at")
    return {
        "release": release,
        "page": page,
        "may_vote": app.may(caller, Permission.APPROVE, release.env),
        "own": own,
        "expired": release.phase.value == "cancelled"
        or (expires is not None and expires < app.clock()),
        "waiting": release.phase.value == "pending_approval",
        "now": app.clock(),
    }


def ledger_context(
    app: Application, caller: Caller, params: Mapping[str, str], query: Mapping[str, str]
) -> dict[str, Any]:
    head, _ = app.store.ledger_head()
    before = _number(query.get("before"), head + 1)
    release = _number(query.get("release"), 0) or None
    after = max(0, before - 1 - LEDGER_WINDOW)
    events = app.events(
        caller,
        release_id=release,
        service=query.get("service") or None,
        env=query.get("env") or None,
        after=after,
        limit=LEDGER_WINDOW,
    )
    kept = filter_events(
        (e for e in events if e.seq < before),
        kind=query.get("kind") or None,
        actor=query.get("actor") or None,
    )
    shown = list(reversed(kept[-LEDGER_PAGE:]))
    report = app.ledger.report(full=False).to_json()
    filters = {k: query.get(k, "") for k in ("service", "env", "kind", "actor", "release")}
    return {
        "events": shown,
        "report": report,
        "head": head,
        "filters": filters,
        # Older events may exist when this page is full or the window did not reach #1.
        "older": (shown[-1].seq if shown else after + 1)
        if len(kept) > LEDGER_PAGE or after > 0
        else None,
    }


PERIODS = (30, 90, 180)
"""The periods (days) the Insight page offers; the API takes any up to 400 days."""
INCIDENTS_SHOWN = 100


def insight_context(
    app: Application, caller: Caller, params: Mapping[str, str], query: Mapping[str, str]
) -> dict[str, Any]:
    """DORA's keys of a period (overall, per service, per week), the SLOs and the open
    incidents of one environment: the same reads as ``/api/v1/dora``, ``/slos`` and
    ``/incidents``, so the figures are the API's."""
    days = _number(query.get("days"), 90)
    if days not in PERIODS:
        raise UsageError(f"the period is one of {', '.join(map(str, PERIODS))} days")
    project = app.project.last_good()
    config = project.config if project is not None else None
    envs = list(config.environments) if config is not None else []
    # Production by default, as the API; a project without one: its last environment.
    env = query.get("env") or ("production" if "production" in envs or not envs else envs[-1])
    service = query.get("service") or None
    report, weeks = app.dora_trends(caller, days=days, env=env, service=service)
    slos = sorted(
        app.slo_status(caller, service, env),
        key=lambda s: (not any(s.firing.values()), s.service, s.slo.name),
    )
    incidents = app.incidents(
        caller, open_only=True, service=service, env=env, limit=INCIDENTS_SHOWN
    )
    label = service or "all services"
    return {
        "days": days,
        "periods": PERIODS,
        "env": env,
        "envs": envs or [env],
        "service": service,
        "services": list(config.services) if config is not None else [],
        "report": report,
        "weeks": weeks,
        "slos": slos,
        "firing": sum(1 for s in slos if any(s.firing.values())),
        "incidents": incidents,
        # The release each incident counts against, by name (open incidents are few).
        "releases": {i.id: app.store.get_release(i.release_id) for i in incidents if i.release_id},
        "burn": {
            (s.service, s.slo.name): [(window_name(w), r) for w, r in sorted(s.burn.items())]
            for s in slos
        },
        "may_resolve": {i.id: app.may(caller, Permission.DEPLOY, i.env) for i in incidents},
        # In the shape the service page's charts take (app.js): one series, per week.
        "chart": {
            "times": [w.start for w in weeks],
            "order": ["all"],
            "labels": {"all": label},
            "versions": {
                "all": {
                    "per_week": [round(w.per_week, 3) for w in weeks],
                    "failure_rate": [_percent(w.change_failure_rate) for w in weeks],
                    "lead_time_h": [_hours(w.lead_time.median) for w in weeks],
                    "recovery_h": [_hours(w.recovery.median) for w in weeks],
                }
            },
        },
    }


def _percent(ratio: float | None) -> float | None:
    return None if ratio is None else round(100 * ratio, 2)


def _hours(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds / 3600, 3)


def pipelines_context(
    app: Application, caller: Caller, params: Mapping[str, str], query: Mapping[str, str]
) -> dict[str, Any]:
    return {"runs": app.pipeline_runs(caller)}


def flags_context(
    app: Application, caller: Caller, params: Mapping[str, str], query: Mapping[str, str]
) -> dict[str, Any]:
    return {"board": board(app.flags, caller)}


def flag_context(
    app: Application, caller: Caller, params: Mapping[str, str], query: Mapping[str, str]
) -> dict[str, Any]:
    key = params["key"]
    if len(key) > 100:
        raise UsageError("a flag key has at most 100 characters")
    return {"key": key, "flag": flag_page(app.flags, app.flag_rollouts, caller, key)}


def flag_watch(app: Application, params: Mapping[str, str]) -> object:
    """A running guarded rollout's counts move between ledger events (each tick that folds
    new counts bumps its version); nothing else on a flag's page does."""
    return app.flag_rollouts.running_versions(params["key"])


VIEWS = (
    View(
        "overview",
        "/",
        "overview.html",
        overview_context,
        always=True,
        period=2.0,
        title="Overview",
    ),
    View(
        "service",
        "/services/{service}/{env}",
        "service.html",
        service_context,
        always=True,
        title="Service",
    ),
    View(
        "release",
        "/releases/{release_id:int}",
        "release.html",
        release_context,
        period=2.0,
        title="Release",
    ),
    View("approvals", "/approvals", "approvals.html", approvals_context, title="Approvals"),
    View(
        "approval",
        "/approvals/{release_id:int}",
        "approval.html",
        approval_context,
        period=2.0,
        title="Approval",
    ),
    View("ledger", "/ledger", "ledger.html", ledger_context, period=2.0, title="Ledger"),
    View("flags", "/flags", "flags.html", flags_context, period=2.0, title="Flags"),
    View(
        "flag",
        "/flags/{key}",
        "flag.html",
        flag_context,
        period=2.0,
        title="Flag",
        watch=flag_watch,
    ),
    # Re-rendered every period (SLO budgets move without ledger events); DORA's part is
    # shared between pages for Application.trends_ttl seconds.
    View(
        "insight",
        "/insight",
        "insight.html",
        insight_context,
        always=True,
        period=15.0,
        title="Insight",
    ),
    View(
        "pipelines",
        "/pipelines",
        "pipelines.html",
        pipelines_context,
        period=2.0,
        title="Pipelines",
    ),
)


def _id(raw: str) -> int:
    value = int(raw)
    if not 1 <= value < 2**31:
        raise UsageError("a release id is a positive number")
    return value


def _number(raw: str | None, default: int) -> int:
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or len(raw) > 12:
        raise UsageError(f"{raw[:20]!r} is not a whole number")
    return int(raw)


# --- filters the templates use ---------------------------------------------------------------


def ago(seconds: float) -> str:
    """``42s``, ``5m``, ``3h``, ``2d``: an age people read at a glance."""
    s = int(max(0, seconds))
    if s < 90:
        return f"{s}s"
    if s < 5400:
        return f"{s // 60}m"
    if s < 172800:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def when(at: float | None) -> str:
    if at is None:
        return ""
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(seconds: float | None) -> str:
    """``40s``, ``12m``, ``5.2h``, ``3.1d``: a lead or recovery time, or a dash for none."""
    if seconds is None:
        return "\u2013"  # an en dash: nothing to show
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def percent(ratio: float | None) -> str:
    return "\u2013" if ratio is None else f"{100 * ratio:.1f}%"


def short(value: object, n: int = 7) -> str:
    text = "" if value is None else str(value)
    return text.removeprefix("sha256:")[:n]
