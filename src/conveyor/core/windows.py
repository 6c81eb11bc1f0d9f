"""Deploy windows: may a deploy start now, which window says so, and when that changes.

A window is a set of intervals on the time line: every start its recurrence gives, for
``duration`` seconds (half-open: a window covering [09:00, 17:00) is open at 09:00 and
closed at 17:00). The judgement, for one service in one environment at ``now``:

- a **deny** window that covers ``now`` closes deploys; deny wins over everything;
- otherwise, when any **allow** window applies to the service and environment (whether
  or not it covers ``now``), deploys are allowed only inside one of them;
- otherwise deploys are allowed.

A window applies when its ``environments`` and ``services`` name them (empty: all).

*Which instants* a cron expression means in Europe/Berlin across a daylight-saving change is
a calendar question, and calendars read tzdata; the core does no I/O and reads no clock, so
it never sees a date: times are float seconds (like the rest of the core) and a window's
starts come from a ``Recurrence`` the shell supplies (``config.windows.CronRecurrence``
reads cron and time zones; ``Once`` is a one-off freeze). What stays here is the part worth
testing exhaustively: merging the windows into open and closed, naming the window that
decided, and finding the next two changes.

The next changes are computed by a sweep over the windows' boundaries in time order —
never by probing second after second. While deny windows are in force nothing can open, so
the sweep jumps straight to the end of the last of them (a freeze longer than a year still
says when it ends, though not what follows it). The sweep is bounded: ``horizon`` (366
days) and ``max_starts`` (starts
read from the recurrences, so a window that fires every minute cannot make a deploy wait
seconds for an answer). When it stops early the verdict says how far it knows
(``known_until``); ``None`` there means every window was followed to its end, so "no
change" really is "never".
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

DAY = 86_400.0
HORIZON = 366 * DAY
"""How far ahead the next change is looked for."""
MAX_STARTS = 2_000
"""Window starts read per decision, at most: 7 years of a weekday window, 7 days of one
that opens every five minutes (about 0.1 s of croniter)."""

WindowKind = Literal["allow", "deny"]

Why = Literal["no-window", "no-deny", "allow", "deny", "outside-allow"]
"""How the verdict came about:

``no-window``: no window applies (open, for ever). ``no-deny``: only deny windows apply and
none covers now (open). ``allow``: inside an allow window (open). ``deny``: inside a deny
window (closed). ``outside-allow``: allow windows apply and none covers now (closed).
"""


class Recurrence(Protocol):
    """When a window starts: the instants, ascending, strictly after a given one."""

    def starts_after(self, t: float) -> Iterator[float]:
        """Start times (Unix seconds) strictly greater than ``t``, ascending, lazily; the
        iterator may be endless."""
        ...


@dataclass(frozen=True)
class Once:
    """One start: a one-off window (a freeze from ``from`` to ``to``)."""

    start: float

    def starts_after(self, t: float) -> Iterator[float]:
        if self.start > t:
            yield self.start


@dataclass(frozen=True)
class Window:
    """One entry of ``windows:``; ``timezone`` and ``spec`` are carried for people only."""

    name: str
    kind: WindowKind
    recurrence: Recurrence
    duration: float
    reason: str = ""
    environments: frozenset[str] = frozenset()
    services: frozenset[str] = frozenset()
    timezone: str = "UTC"
    spec: str = ""  # how it was written: "0 9 * * 1-5 for 8h", "2026-12-23T00:00 to ..."

    def applies(self, service: str, env: str) -> bool:
        return (not self.environments or env in self.environments) and (
            not self.services or service in self.services
        )


@dataclass(frozen=True)
class Change:
    """Deploys open or close at ``at`` because ``window`` starts or ends then."""

    at: float
    opens: bool
    window: Window


@dataclass(frozen=True)
class Verdict:
    open: bool
    why: Why
    window: Window | None
    """The window that decided: the deny covering now; the allow covering now; when outside
    every allow, the one that opens next (else the first that applies); when open with only
    deny windows about, the one that closes next. None when no window applies."""
    changes: tuple[Change, ...]
    """The next change and the one after it (fewer when they were not found)."""
    known_until: float | None
    """Changes are known up to this instant; None: every window was followed to its end."""

    @property
    def opens(self) -> Change | None:
        """When deploys are allowed again (closed now), or next (open now)."""
        return next((c for c in self.changes if c.opens), None)

    @property
    def closes(self) -> Change | None:
        return next((c for c in self.changes if not c.opens), None)


def applicable(windows: Sequence[Window], service: str, env: str) -> tuple[Window, ...]:
    return tuple(w for w in windows if w.applies(service, env))


def decide(
    windows: Sequence[Window],
    service: str,
    env: str,
    now: float,
    *,
    horizon: float = HORIZON,
    max_starts: int = MAX_STARTS,
) -> Verdict:
    """May a deploy of ``service`` to ``env`` start at ``now``; and when does that change."""
    chosen = applicable(windows, service, env)
    sweep = _Sweep(chosen, now)
    covering = [w for i, w in enumerate(chosen) if sweep.active[i] > 0]
    changes, known_until = sweep.changes(limit=2, until=now + horizon, max_starts=max_starts)
    first = changes[0].window if changes else None
    denies = [w for w in covering if w.kind == "deny"]
    allows = [w for w in chosen if w.kind == "allow"]
    verdict: tuple[bool, Why, Window | None]
    if denies:
        verdict = (False, "deny", denies[0])
    elif allows:
        inside = [w for w in covering if w.kind == "allow"]
        if inside:
            verdict = (True, "allow", inside[0])
        else:
            opening = first if first is not None and first.kind == "allow" else allows[0]
            verdict = (False, "outside-allow", opening)
    elif chosen:
        verdict = (True, "no-deny", first)
    else:
        verdict = (True, "no-window", None)
    is_open, why, window = verdict
    return Verdict(is_open, why, window, tuple(changes), known_until)


class _Sweep:
    """The windows' boundaries (starts and ends) in time order, with what covers the present.

    Each window keeps one pending start in the heap (the next its recurrence gives) and the
    ends of its intervals that have begun; the present is the sweep's position. Intervals of
    one window may overlap (a 24h daily window on the 23-hour day of a DST change), so
    coverage is a count, not a flag.
    """

    def __init__(self, windows: Sequence[Window], now: float) -> None:
        self.windows = windows
        self.any_allow = any(w.kind == "allow" for w in windows)
        self.now = now
        self.starts_read = 0
        self._order = 0
        self._place(now)

    def _place(self, t: float) -> None:
        """Stand at ``t``, every boundary up to and including ``t`` applied: an interval
        covers ``t`` when t - duration < start <= t."""
        self.active = [0] * len(self.windows)
        self._heap: list[tuple[float, int, int, bool]] = []  # (at, order, window, is_start)
        self._pending: list[Iterator[float]] = []
        for index, window in enumerate(self.windows):
            self._pending.append(window.recurrence.starts_after(t - window.duration))
            self._pull(index, begun_by=t)

    def is_open(self) -> bool:
        covered = [w.kind for i, w in enumerate(self.windows) if self.active[i] > 0]
        if "deny" in covered:
            return False
        return not self.any_allow or "allow" in covered

    def changes(
        self, *, limit: int, until: float, max_starts: int
    ) -> tuple[list[Change], float | None]:
        found: list[Change] = []
        state = self.is_open()
        reached = self.now
        while len(found) < limit:
            if self.starts_read >= max_starts or reached > until:
                return found, reached
            leap = self._denied_until(until) if not state else None
            if leap is not None:
                # Nothing can open before every deny in force has ended: go there directly
                # (so a freeze longer than the horizon still says when it ends).
                at, cause = leap
                self._place(at)
                moved = [(cause, False)]
            else:
                if not self._heap:
                    return found, None
                at = self._heap[0][0]
                if at > until:
                    return found, until
                moved = self._step(at)
            reached = at
            now_open = self.is_open()
            if now_open != state:
                found.append(Change(at, now_open, self._cause(moved, now_open)))
                state = now_open
        return found, found[-1].at

    def _step(self, at: float) -> list[tuple[int, bool]]:
        """Apply every boundary at ``at``; (window, is_start) of each."""
        moved: list[tuple[int, bool]] = []
        while self._heap and self._heap[0][0] == at:
            _, _, index, is_start = heapq.heappop(self._heap)
            moved.append((index, is_start))
            if is_start:
                self.active[index] += 1
                self._push(at + self.windows[index].duration, index, is_start=False)
                self._pull(index, begun_by=at)
            else:
                self.active[index] -= 1
        return moved

    def _denied_until(self, until: float) -> tuple[float, int] | None:
        """When the deny intervals in force end, and the window of the last (None: none in
        force). A deny that starts before that end carries it on (a daily 24h deny is one
        long freeze), followed no further than ``until``. Reads the windows' starts on: the
        caller stands somewhere new (``_place``) afterwards."""
        ends = [
            (at, index)
            for at, _, index, is_start in self._heap
            if not is_start and self.windows[index].kind == "deny"
        ]
        if not ends:
            return None
        last, cause = max(ends, key=lambda end: (end[0], -end[1]))
        pending = {
            index: at
            for at, _, index, is_start in self._heap
            if is_start and self.windows[index].kind == "deny"
        }
        carried = True
        while carried and last <= until:
            carried = False
            for index, start in sorted(pending.items()):
                if start > last:
                    continue
                carried = True
                end = start + self.windows[index].duration
                if end > last:
                    last, cause = end, index
                following = next(self._pending[index], None)
                self.starts_read += 1
                if following is None:
                    del pending[index]
                else:
                    pending[index] = following
        return last, cause

    def _cause(self, moved: list[tuple[int, bool]], opened: bool) -> Window:
        """The first declared window whose boundary at this instant pushed that way: a deny
        ending or an allow starting opens; a deny starting or an allow ending closes."""
        pushing = [i for i, is_start in moved if self._opens(i, is_start) == opened]
        return self.windows[min(pushing or [i for i, _ in moved])]

    def _opens(self, index: int, is_start: bool) -> bool:
        return (self.windows[index].kind == "allow") == is_start

    def _pull(self, index: int, *, begun_by: float) -> None:
        """Read the window's starts: those up to ``begun_by`` are active, the next is queued."""
        window = self.windows[index]
        for start in self._pending[index]:
            self.starts_read += 1
            if start > begun_by:
                self._push(start, index, is_start=True)
                return
            self.active[index] += 1
            self._push(start + window.duration, index, is_start=False)

    def _push(self, at: float, index: int, *, is_start: bool) -> None:
        self._order += 1
        heapq.heappush(self._heap, (at, self._order, index, is_start))
