"""Deploy windows as tables: windows and an instant in, open or closed, why, and when next.

The table rows use a plain periodic recurrence (``Every``) so each row reads as hours of a
day; the daylight-saving rows use the real calendar (``config.windows.CronRecurrence``,
cron on a zone's wall clock) across the changes in Europe/Berlin and America/New_York.
The properties check the sweep against a brute-force reading of the same windows.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conveyor.config.windows import CronRecurrence, zone
from conveyor.core.windows import HORIZON, Once, Recurrence, Verdict, Window, decide

H = 3600.0
DAY = 24 * H
MONDAY = 1_796_601_600.0  # 2026-12-07T00:00Z, a Monday; the tables count hours from it


@dataclass(frozen=True)
class Every:
    """Starts at ``first + k * period`` for every whole k (the past included)."""

    period: float
    first: float = 0.0

    def starts_after(self, t: float) -> Iterator[float]:
        k = (t - self.first) // self.period + 1
        while True:
            yield self.first + k * self.period
            k += 1


def daily(
    name: str,
    kind: str,
    start_hour: float,
    hours: float,
    *,
    envs: tuple[str, ...] = (),
    services: tuple[str, ...] = (),
    reason: str = "",
) -> Window:
    return Window(
        name=name,
        kind=kind,  # type: ignore[arg-type]
        recurrence=Every(DAY, MONDAY + start_hour * H),
        duration=hours * H,
        reason=reason,
        environments=frozenset(envs),
        services=frozenset(services),
    )


def once(name: str, kind: str, start_hour: float, hours: float) -> Window:
    return Window(name, kind, Once(MONDAY + start_hour * H), hours * H)  # type: ignore[arg-type]


def at(hour: float) -> float:
    return MONDAY + hour * H


OFFICE = daily("office", "allow", 9, 8)  # 09:00-17:00
LUNCH = daily("lunch", "deny", 12, 1)  # 12:00-13:00
FREEZE = once("freeze", "deny", 24 + 10, 48)  # Tuesday 10:00 to Thursday 10:00


def hours(verdict: Verdict) -> list[tuple[str, float, str]]:
    """The changes as (opens|closes, hours since MONDAY, window)."""
    return [
        ("opens" if c.opens else "closes", round((c.at - MONDAY) / H, 4), c.window.name)
        for c in verdict.changes
    ]


@pytest.mark.parametrize(
    ("windows", "when", "open_", "why", "window", "changes"),
    [
        pytest.param((), 11, True, "no-window", None, [], id="empty-schedule-always-open"),
        pytest.param(
            (OFFICE,),
            11,
            True,
            "allow",
            "office",
            [("closes", 17, "office"), ("opens", 33, "office")],
            id="inside-allow",
        ),
        pytest.param(
            (OFFICE,),
            8,
            False,
            "outside-allow",
            "office",
            [("opens", 9, "office"), ("closes", 17, "office")],
            id="before-allow",
        ),
        pytest.param(
            (OFFICE,),
            9,
            True,
            "allow",
            "office",
            [("closes", 17, "office"), ("opens", 33, "office")],
            id="allow-start-is-inside",
        ),
        pytest.param(
            (OFFICE,),
            17,
            False,
            "outside-allow",
            "office",
            [("opens", 33, "office"), ("closes", 41, "office")],
            id="allow-end-is-outside",
        ),
        pytest.param(
            (OFFICE, LUNCH),
            11,
            True,
            "allow",
            "office",
            [("closes", 12, "lunch"), ("opens", 13, "lunch")],
            id="deny-inside-allow-ahead",
        ),
        pytest.param(
            (OFFICE, LUNCH),
            12.5,
            False,
            "deny",
            "lunch",
            [("opens", 13, "lunch"), ("closes", 17, "office")],
            id="deny-inside-allow-wins",
        ),
        pytest.param(
            (LUNCH,),
            11,
            True,
            "no-deny",
            "lunch",
            [("closes", 12, "lunch"), ("opens", 13, "lunch")],
            id="deny-only-open-around-it",
        ),
        pytest.param(
            (daily("morning", "allow", 9, 4), daily("afternoon", "allow", 12, 5)),
            12.5,
            True,
            "allow",
            "morning",
            [("closes", 17, "afternoon"), ("opens", 33, "morning")],
            id="overlapping-allows",
        ),
        pytest.param(
            (daily("a", "deny", 10, 2), daily("b", "deny", 11, 3)),
            11.5,
            False,
            "deny",
            "a",
            [("opens", 14, "b"), ("closes", 34, "a")],
            id="overlapping-denies",
        ),
        pytest.param(
            (daily("late", "allow", 17, 4), daily("early", "allow", 13, 4)),
            16,
            True,
            "allow",
            "early",
            [("closes", 21, "late"), ("opens", 37, "early")],
            id="adjacent-allows-chain",
        ),
        pytest.param(
            (OFFICE, FREEZE),
            35,
            False,
            "deny",
            "freeze",
            [("opens", 82, "freeze"), ("closes", 89, "office")],
            id="freeze-ends-inside-allow",
        ),
        pytest.param(
            (OFFICE, FREEZE),
            30,
            False,
            "outside-allow",
            "office",
            [("opens", 33, "office"), ("closes", 34, "freeze")],
            id="freeze-cuts-an-opening",
        ),
        pytest.param(
            (FREEZE,),
            60,
            False,
            "deny",
            "freeze",
            [("opens", 82, "freeze")],
            id="freeze-ends",
        ),
        pytest.param(
            (FREEZE,),
            100,
            True,
            "no-deny",
            None,
            [],
            id="freeze-passed-never-closes",
        ),
    ],
)
def test_decide(
    windows: tuple[Window, ...],
    when: float,
    open_: bool,
    why: str,
    window: str | None,
    changes: list[tuple[str, float, str]],
) -> None:
    verdict = decide(windows, "catalog", "production", at(when))
    assert (verdict.open, verdict.why) == (open_, why)
    assert (verdict.window.name if verdict.window else None) == window
    assert hours(verdict) == changes


def test_empty_environments_and_services_mean_all() -> None:
    prod_only = daily("prod-office", "allow", 9, 8, envs=("production",))
    web_lunch = daily("web-lunch", "deny", 12, 1, services=("web",))
    windows = (prod_only, web_lunch)
    assert decide(windows, "catalog", "staging", at(3)).why == "no-window"
    assert decide(windows, "catalog", "production", at(3)).why == "outside-allow"
    assert decide(windows, "web", "staging", at(12)).why == "deny"
    assert decide(windows, "web", "production", at(12.5)).window == web_lunch
    assert decide(windows, "catalog", "production", at(12.5)).why == "allow"


def test_an_allow_that_applies_closes_even_when_it_never_opens_again() -> None:
    gone = once("gone", "allow", -10, 2)
    verdict = decide((gone,), "catalog", "production", at(0))
    assert (verdict.open, verdict.why, verdict.changes, verdict.known_until) == (
        False,
        "outside-allow",
        (),
        None,  # followed to the end: it really is never
    )


def test_the_search_is_bounded_by_the_horizon() -> None:
    always = Window("always", "allow", Every(DAY), DAY)  # each day's ends where the next begins
    verdict = decide((always,), "catalog", "production", at(5))
    assert verdict.open and verdict.changes == ()
    assert verdict.known_until == at(5) + HORIZON


def test_the_search_is_bounded_by_the_starts_it_reads() -> None:
    every_minute = Window("busy", "allow", Every(60.0), 60.0)
    verdict = decide((every_minute,), "catalog", "production", at(5), max_starts=1_000)
    assert verdict.open and verdict.changes == ()
    assert verdict.known_until is not None
    assert at(5) < verdict.known_until <= at(5) + 1_001 * 60.0


def test_a_freeze_longer_than_the_horizon_still_says_when_it_ends() -> None:
    three_years = once("migration", "deny", -10, 3 * 365 * 24)  # ends on a day at 14:00
    verdict = decide((OFFICE, three_years), "catalog", "production", at(0))
    assert (verdict.open, verdict.why, verdict.window) == (False, "deny", three_years)
    # Past the horizon, only the end of the freeze is known, not what follows it.
    assert hours(verdict) == [("opens", 26270, "migration")]
    assert verdict.known_until == at(26270)


def test_a_deny_that_never_ends_is_followed_no_further_than_the_horizon() -> None:
    endless = Window("endless", "deny", Every(DAY), DAY)  # each day's ends as the next begins
    verdict = decide((endless, OFFICE), "catalog", "production", at(5))
    assert not verdict.open and verdict.changes == ()
    assert verdict.known_until is not None
    assert at(5) + HORIZON < verdict.known_until <= at(5) + HORIZON + DAY


# --- daylight-saving changes, on the real calendar -----------------------------------------


def cron(name: str, kind: str, expression: str, hours_: float, tz: str, reason: str = "") -> Window:
    return Window(
        name=name,
        kind=kind,  # type: ignore[arg-type]
        recurrence=CronRecurrence(expression, zone(tz)),
        duration=hours_ * H,
        reason=reason,
        timezone=tz,
    )


def utc(text: str) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp()


def local(t: float, tz: str) -> str:
    return dt.datetime.fromtimestamp(t, zone(tz)).isoformat(timespec="minutes")


BERLIN = "Europe/Berlin"
NEW_YORK = "America/New_York"


@pytest.mark.parametrize(
    ("window", "now", "expected"),
    [
        pytest.param(
            cron("office", "allow", "0 9 * * *", 8, BERLIN),
            "2026-03-28T18:00",  # Saturday evening; clocks go forward that night
            [("opens", "2026-03-29T09:00+02:00"), ("closes", "2026-03-29T17:00+02:00")],
            id="berlin-spring-daily-09-stays-09-local",
        ),
        pytest.param(
            cron("office", "allow", "0 9 * * *", 8, BERLIN),
            "2026-10-24T18:00",  # clocks go back that night
            [("opens", "2026-10-25T09:00+01:00"), ("closes", "2026-10-25T17:00+01:00")],
            id="berlin-autumn-daily-09-stays-09-local",
        ),
        pytest.param(
            cron("night", "deny", "0 2 * * *", 2, BERLIN),
            "2026-03-28T12:00",
            # 02:00 does not exist on 29 March: the window starts as the clock jumps to
            # 03:00 and lasts its two real hours.
            [("closes", "2026-03-29T03:00+02:00"), ("opens", "2026-03-29T05:00+02:00")],
            id="berlin-spring-start-in-the-skipped-hour",
        ),
        pytest.param(
            cron("night", "deny", "30 2 * * *", 2, BERLIN),
            "2026-10-24T12:00",
            # 02:30 happens twice on 25 October: the first one, for two real hours.
            [("closes", "2026-10-25T02:30+02:00"), ("opens", "2026-10-25T03:30+01:00")],
            id="berlin-autumn-start-in-the-repeated-hour",
        ),
        pytest.param(
            cron("night", "deny", "0 1 * * *", 2, BERLIN),
            "2026-10-24T12:00",
            # Two real hours from 01:00 CEST end at 02:00 CET: elapsed time, not the wall.
            [("closes", "2026-10-25T01:00+02:00"), ("opens", "2026-10-25T02:00+01:00")],
            id="berlin-autumn-duration-is-elapsed",
        ),
        pytest.param(
            cron("office", "allow", "0 9 * * 1-5", 8, NEW_YORK),
            "2026-03-06T23:00",  # Friday evening; clocks go forward on Sunday 8 March
            [("opens", "2026-03-09T09:00-04:00"), ("closes", "2026-03-09T17:00-04:00")],
            id="new-york-spring-weekday-office",
        ),
        pytest.param(
            cron("office", "allow", "0 9 * * 1-5", 8, NEW_YORK),
            "2026-10-30T23:00",  # Friday evening; clocks go back on Sunday 1 November
            [("opens", "2026-11-02T09:00-05:00"), ("closes", "2026-11-02T17:00-05:00")],
            id="new-york-autumn-weekday-office",
        ),
        pytest.param(
            cron("night", "deny", "30 2 * * *", 1, NEW_YORK),
            "2026-03-07T12:00",
            [("closes", "2026-03-08T03:00-04:00"), ("opens", "2026-03-08T04:00-04:00")],
            id="new-york-spring-start-in-the-skipped-hour",
        ),
        pytest.param(
            cron("night", "deny", "30 1 * * *", 1, NEW_YORK),
            "2026-10-31T12:00",
            [("closes", "2026-11-01T01:30-04:00"), ("opens", "2026-11-01T01:30-05:00")],
            id="new-york-autumn-start-in-the-repeated-hour",
        ),
    ],
)
def test_daylight_saving_changes(window: Window, now: str, expected: list[tuple[str, str]]) -> None:
    verdict = decide((window,), "catalog", "production", utc(now))
    found = [
        ("opens" if c.opens else "closes", local(c.at, window.timezone)) for c in verdict.changes
    ]
    assert found == expected


def test_a_daily_window_is_09_local_on_both_sides_of_each_change() -> None:
    window = cron("office", "allow", "0 9 * * *", 8, BERLIN)
    opens: list[str] = []
    t = utc("2026-03-27T12:00")
    while len(opens) < 4:
        change = decide((window,), "catalog", "production", t).opens
        assert change is not None
        opens.append(local(change.at, BERLIN))
        t = change.at + H
    assert opens == [
        "2026-03-28T09:00+01:00",
        "2026-03-29T09:00+02:00",
        "2026-03-30T09:00+02:00",
        "2026-03-31T09:00+02:00",
    ]


# --- properties --------------------------------------------------------------------------


def covers(window: Window, t: float) -> bool:
    """Brute force: some start s of the window has s <= t < s + duration (starts ascend, so
    the first start after t - duration decides)."""
    first = next(iter(window.recurrence.starts_after(t - window.duration)), None)
    return first is not None and first <= t


def oracle(windows: tuple[Window, ...], service: str, env: str, t: float) -> bool:
    chosen = [w for w in windows if w.applies(service, env)]
    if any(w.kind == "deny" and covers(w, t) for w in chosen):
        return False
    allows = [w for w in chosen if w.kind == "allow"]
    return not allows or any(covers(w, t) for w in allows)


@st.composite
def windows_strategy(draw: st.DrawFn) -> tuple[Window, ...]:
    count = draw(st.integers(0, 4))
    out = []
    for index in range(count):
        kind = draw(st.sampled_from(["allow", "deny"]))
        envs = draw(st.sampled_from([(), ("production",), ("staging",)]))
        recurring = draw(st.booleans())
        if recurring:
            period = draw(st.sampled_from([15 * 60.0, H, 6 * H, DAY, 7 * DAY]))
            first = draw(st.floats(0, period, allow_nan=False)) // 60 * 60
            # a duration equal to the period chains one interval into the next
            duration = draw(st.one_of(st.just(period), st.floats(60.0, period))) // 60 * 60
            recurrence: Recurrence = Every(period, MONDAY + first)
        else:
            recurrence = Once(MONDAY + draw(st.integers(-48, 200)) * 900.0)
            duration = draw(st.integers(1, 400)) * 900.0
        out.append(
            Window(
                f"w{index}",
                kind,  # type: ignore[arg-type]
                recurrence,
                duration,
                environments=frozenset(envs),
            )
        )
    return tuple(out)


instants = st.integers(0, 14 * 24 * 4).map(lambda q: MONDAY + q * 900.0 + 450.0 * (q % 3 == 0))


@settings(max_examples=300, deadline=None)
@given(windows_strategy(), instants, st.sampled_from(["production", "staging"]))
def test_the_verdict_agrees_with_brute_force(
    windows: tuple[Window, ...], now: float, env: str
) -> None:
    verdict = decide(windows, "catalog", env, now)
    assert verdict.open == oracle(windows, "catalog", env, now)
    if verdict.open:  # open at t implies no applicable deny covers t
        assert not any(
            w.kind == "deny" and w.applies("catalog", env) and covers(w, now) for w in windows
        )
    if verdict.window is not None:
        assert verdict.window.applies("catalog", env)


@settings(max_examples=300, deadline=None)
@given(windows_strategy(), instants, st.sampled_from(["production", "staging"]), st.floats(0, 1))
def test_nothing_changes_before_the_next_change_and_it_does_change_then(
    windows: tuple[Window, ...], now: float, env: str, fraction: float
) -> None:
    verdict = decide(windows, "catalog", env, now)
    state, since = verdict.open, now
    for change in verdict.changes:
        assert change.opens != state
        between = since + (change.at - since) * fraction
        if between < change.at:
            assert decide(windows, "catalog", env, between).open == state
        assert decide(windows, "catalog", env, change.at).open == change.opens
        state, since = change.opens, change.at
    if len(verdict.changes) < 2 and verdict.known_until is None:
        # Followed to the end: the state it ends in holds for ever.
        later = since + 400 * DAY
        assert oracle(windows, "catalog", env, later) == state


@given(windows_strategy(), instants)
def test_a_deny_covering_now_wins_over_everything(windows: tuple[Window, ...], now: float) -> None:
    freeze = Window("freeze", "deny", Once(now - H), 2 * H)
    verdict = decide((*windows, freeze), "catalog", "production", now)
    assert not verdict.open and verdict.why == "deny"
    assert verdict.opens is None or verdict.opens.at >= now + H
