"""Deploy windows where deploys come in: a deploy outside its window is refused, with when.

``core.windows.decide`` judges; this module reads the windows from conveyor.yaml as it is
now (windows concern what is about to happen, so they are read live, like ``requires:``),
asks with the application's clock, and says the answer in people's words: the window's
name and reason, and the next opening both in the window's own time zone and in UTC. A
refusal is evidence too: it goes on the ledger as ``release.refused`` naming the window.

What windows hold back, and what they never do:

- a **deploy** (and a **retry** of a deploy that was rolled back: it ships the same new
  version again) is checked when it is asked for;
- a **rollback**, and a retry of a rollback, never is: the way back is always open;
- a release already **rolling out** when a window closes carries on to its end (the
  window decides whether a deploy may *start*; stopping a rollout half-way would leave
  users split between two versions for the length of the freeze). Its rollback triggers
  still apply, as always;
- an **emergency** deploy (``Releases.deploy(emergency=REASON)``, from a caller with the
  emergency role) is not held back: the window it overrode is named in its
  ``emergency.override`` event, next to the reason, for the review that follows.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, NoReturn

from conveyor.application.caller import Caller
from conveyor.config.schema import ProjectConfig
from conveyor.config.windows import WindowConfig, core_windows, duration_text, zone
from conveyor.core.windows import Change, Verdict, Window, applicable, decide
from conveyor.errors import Refused
from conveyor.store.records import NewEvent
from conveyor.store.repository import Store

WHY_WORDS = {
    "no-window": "no window applies",
    "no-deny": "no deny window is in force",
    "allow": "inside allow window",
    "deny": "deny window",
    "outside-allow": "outside every allow window",
}


@dataclass(frozen=True)
class Closed:
    """No window lets a deploy start now: what the caller is told, what the ledger keeps."""

    message: str
    hint: str
    details: dict[str, Any]  # window, window_kind, window_reason, why, opens_at, opens_at_text


def closed_now(config: ProjectConfig, *, service: str, env: str, now: float) -> Closed | None:
    """Why a deploy of ``service`` to ``env`` may not start at ``now``; None if it may."""
    verdict = decide(core_windows(config.windows), service, env, now)
    if verdict.open:
        return None
    window = verdict.window
    assert window is not None  # a closed verdict always names the window that closed it
    if verdict.why == "deny":
        why = f"deny window '{window.name}' ({_spec(window)}) is in force"
    else:
        why = f"it is outside every allow window for it (next: '{window.name}', {_spec(window)})"
    if window.reason:
        why += f": {window.reason}"
    opens = verdict.opens
    when = moment_text(opens.at, opens.window.timezone) if opens is not None else None
    hint = f"deploys open again {when}" if when is not None else _never_opens(verdict)
    hint += (
        f"; `conveyor windows --env {env}` shows every window. Rollbacks are never held "
        "back by a window"
    )
    return Closed(
        message=f"{service} may not be deployed to {env} now: {why}",
        hint=hint,
        details={
            "window": window.name,
            "window_kind": window.kind,
            "window_reason": window.reason,
            "why": verdict.why,
            "opens_at": opens.at if opens is not None else None,
            "opens_at_text": when,
        },
    )


def refuse(
    store: Store,
    caller: Caller,
    closed: Closed,
    *,
    service: str,
    env: str,
    artifact: str | None,
    asked: str = "deploy",
) -> NoReturn:
    """Record the refusal (``release.refused``, naming the window) and raise it."""
    details = {"artifact": artifact, "asked": asked, **closed.details, "hint": closed.hint}
    store.append_events(
        [NewEvent("release.refused", details, service=service, env=env)], actor=caller.actor
    )
    raise Refused(closed.message, hint=closed.hint)


def check_deploy(
    store: Store,
    caller: Caller,
    config: ProjectConfig,
    *,
    service: str,
    env: str,
    now: float,
    artifact: str | None,
    asked: str = "deploy",
) -> None:
    """Refuse (and record) a deploy of ``service`` to ``env`` that no window lets start now."""
    closed = closed_now(config, service=service, env=env, now=now)
    if closed is not None:
        refuse(store, caller, closed, service=service, env=env, artifact=artifact, asked=asked)


# --- `conveyor windows` -----------------------------------------------------------------


@dataclass(frozen=True)
class WindowRow:
    """The verdict for an environment and the services that share the same windows."""

    env: str
    services: tuple[str, ...]
    every_service: bool  # the row stands for all services of the project
    verdict: Verdict

    def to_json(self) -> dict[str, Any]:
        verdict = self.verdict
        return {
            "env": self.env,
            "services": list(self.services),
            "every_service": self.every_service,
            "open": verdict.open,
            "why": verdict.why,
            "why_text": WHY_WORDS[verdict.why],
            "window": verdict.window.name if verdict.window is not None else None,
            "reason": verdict.window.reason if verdict.window is not None else None,
            "opens": _change_json(verdict.opens),
            "closes": _change_json(verdict.closes),
            "known_until": _moment_json(verdict.known_until, "UTC")
            if verdict.known_until is not None
            else None,
        }


def window_rows(
    config: ProjectConfig, *, now: float, env: str | None = None, service: str | None = None
) -> list[WindowRow]:
    """One row per environment, or per group of services whose windows differ there."""
    windows = core_windows(config.windows)
    envs = [env] if env is not None else list(config.environments)
    services = [service] if service is not None else list(config.services)
    rows: list[WindowRow] = []
    for name in envs:
        groups: dict[tuple[str, ...], list[str]] = {}
        for each in services:
            key = tuple(w.name for w in applicable(windows, each, name))
            groups.setdefault(key, []).append(each)
        every = service is None and len(groups) == 1
        for members in groups.values():
            verdict = decide(windows, members[0], name, now)
            rows.append(WindowRow(name, tuple(members), every, verdict))
    return rows


def windows_json(
    config: ProjectConfig, *, env: str | None = None, service: str | None = None
) -> list[dict[str, Any]]:
    """The windows as declared; only those that apply to ``env`` and ``service`` if given."""
    return [
        _window_json(w, index)
        for index, w in enumerate(config.windows)
        if (env is None or not w.environments or env in w.environments)
        and (service is None or not w.services or service in w.services)
    ]


def _window_json(window: WindowConfig, index: int) -> dict[str, Any]:
    return {
        "name": window.label(index),
        "kind": window.kind,
        "schedule": window.schedule,
        "duration": window.duration,
        "duration_text": duration_text(window.duration) if window.duration else None,
        "from": _moment_json(window.start(), window.timezone) if window.from_ else None,
        "to": _moment_json(window.end(), window.timezone) if window.to else None,
        "timezone": window.timezone,
        "environments": list(window.environments),
        "services": list(window.services),
        "reason": window.reason,
    }


def moment_text(at: float, timezone: str) -> str:
    """``Mon 2026-12-07 09:00 CET (Europe/Berlin), 08:00 UTC``: a window's zone, then UTC."""
    utc = dt.datetime.fromtimestamp(at, dt.UTC)
    if timezone == "UTC":
        return f"{utc:%a %Y-%m-%d %H:%M} UTC"
    local = dt.datetime.fromtimestamp(at, zone(timezone))
    same_day = local.date() == utc.date()
    utc_text = f"{utc:%H:%M}" if same_day else f"{utc:%a %Y-%m-%d %H:%M}"
    return f"{local:%a %Y-%m-%d %H:%M} {local.tzname()} ({timezone}), {utc_text} UTC"


def _moment_json(at: float, timezone: str) -> dict[str, Any]:
    local = dt.datetime.fromtimestamp(at, zone(timezone))
    return {
        "at": at,
        "utc": dt.datetime.fromtimestamp(at, dt.UTC).isoformat().replace("+00:00", "Z"),
        "local": local.isoformat(),
        "timezone": timezone,
        "text": moment_text(at, timezone),
    }


def _change_json(change: Change | None) -> dict[str, Any] | None:
    if change is None:
        return None
    return {**_moment_json(change.at, change.window.timezone), "window": change.window.name}


def _spec(window: Window) -> str:
    return f"{window.spec}, {window.timezone}" if window.spec else window.timezone


def _never_opens(verdict: Verdict) -> str:
    if verdict.known_until is None:
        return "no window ever opens them again"
    return f"they stay closed at least until {moment_text(verdict.known_until, 'UTC')}"
