"""``windows:`` in conveyor.yaml: the forms it takes, the calendar under it, its mistakes.

Every mistake is a ``ConfigError`` naming the line, the field and a fix, and all of them
are reported at once. The calendar rows pin the daylight-saving rules docs/config.md states.
"""

from __future__ import annotations

import datetime as dt
import textwrap

import pytest

from conveyor.config import parse_config
from conveyor.config.windows import (
    CronRecurrence,
    duration_text,
    instant_of,
    shortest_gap,
    zone,
)
from conveyor.core.windows import Once
from conveyor.errors import ConfigError

HEAD = """\
project: shop
services:
  catalog:
    build: {run: make, outputs: [app/]}
    run: python3 app.py
  web:
    build: {run: make, outputs: [app/]}
    run: python3 app.py
environments:
  staging: {}
  production: {}
windows:
"""  # the first window is on line 13


def config(windows: str) -> str:
    return HEAD + textwrap.indent(textwrap.dedent(windows), "  ")


def utc(text: str) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp()


def test_both_forms_and_their_defaults() -> None:
    loaded = parse_config(
        config(
            """\
            - kind: allow
              name: office-hours
              schedule: "0 9 * * 1-5"
              duration: 8h
              timezone: Europe/Berlin
              environments: [production]
              reason: someone is around to watch
            - kind: deny
              from: 2026-12-23T00:00
              to: 2027-01-02
              timezone: Europe/Berlin
              services: [web]
            - {kind: deny, from: "2026-12-23T00:00:00+01:00", to: 2026-12-24T00:00Z}
            """
        )
    )
    office, freeze, offset = loaded.windows
    assert (office.name, office.duration, office.services) == ("office-hours", 8 * 3600.0, [])
    assert office.window(0).name == "office-hours"
    assert isinstance(office.window(0).recurrence, CronRecurrence)
    assert office.window(0).environments == frozenset({"production"})
    # Without an offset, from and to are wall-clock times of the window's zone (CET here);
    # a date alone is its midnight.
    assert freeze.start() == utc("2026-12-22T23:00")
    assert freeze.end() == utc("2027-01-01T23:00")
    core = freeze.window(1)
    assert core.name == "windows[1]"
    assert core.recurrence == Once(utc("2026-12-22T23:00"))
    assert core.duration == 10 * 86400.0
    assert core.spec == "2026-12-23T00:00 to 2027-01-02"
    # With an offset (or Z) the instant is the one written; the zone defaults to UTC.
    assert (offset.timezone, offset.start(), offset.end()) == (
        "UTC",
        utc("2026-12-22T23:00"),
        utc("2026-12-24T00:00"),
    )


def test_no_windows_is_the_default() -> None:
    assert parse_config(HEAD.removesuffix("windows:\n")).windows == []


# (windows yaml, line, field, message substring, hint substring)
BROKEN = [
    (
        '- {kind: allow, schedule: "0 25 * * *", duration: 1h}',
        13,
        "windows[0].schedule",
        "schedule '0 25 * * *' is not a cron expression",
        "five fields: minute hour day-of-month month day-of-week",
    ),
    (
        '- {kind: allow, schedule: "0 9 * * 1-5 *", duration: 1h}',
        13,
        "windows[0].schedule",
        "has 6 field(s), not 5",
        "seconds and years are not supported",
    ),
    (
        '- {kind: deny, schedule: "at nine", duration: 1h}',
        13,
        "windows[0].schedule",
        "has 2 field(s), not 5",
        "e.g. '0 9 * * 1-5'",
    ),
    (
        '- {kind: deny, schedule: "0 0 30 2 *", duration: 1h}',
        13,
        "windows[0].schedule",
        "never matches a date",
        "there is no 30 February",
    ),
    (
        '- {kind: allow, schedule: "0 9 * * *", duration: 8h, timezone: Europe/Berln}',
        13,
        "windows[0].timezone",
        "unknown time zone 'Europe/Berln'",
        "did you mean 'Europe/Berlin'?",
    ),
    (
        '- {kind: allow, schedule: "0 9 * * *", duration: 8h, timezone: CEST}',
        13,
        "windows[0].timezone",
        "unknown time zone 'CEST'",
        "an IANA time zone name such as Europe/Berlin",
    ),
    (
        "- {kind: deny, from: 2027-01-02T00:00, to: 2026-12-23T00:00}",
        13,
        "windows[0].to",
        "'to' (2026-12-23T00:00) is not after 'from' (2027-01-02T00:00)",
        "swap them",
    ),
    (
        "- {kind: deny, from: 2026-12-23T00:00, to: 2026-12-23T00:00}",
        13,
        "windows[0].to",
        "is not after 'from'",
        "swap them",
    ),
    (
        "- {kind: deny, from: christmas, to: 2027-01-02T00:00}",
        13,
        "windows[0].from",
        "'christmas' is not a date and time",
        "read in the window's timezone",
    ),
    (
        '- {kind: allow, schedule: "0 9 * * *", duration: 25h}',
        13,
        "windows[0].duration",
        "duration 25h is longer than the 24h between two starts of '0 9 * * *'",
        "shorten it to at most 24h",
    ),
    (
        '- {kind: allow, schedule: "0 9,17 * * *", duration: 9h}',
        13,
        "windows[0].duration",
        "longer than the 8h between two starts",
        "at most 8h",
    ),
    (
        '- {kind: deny, schedule: "*/15 * * * *", duration: 16m}',
        13,
        "windows[0].duration",
        "longer than the 15m between two starts",
        "at most 15m",
    ),
    (
        '- {kind: allow, schedule: "0 9 * * *"}',
        13,
        "windows[0]",
        "missing duration",
        "duration: 8h",
    ),
    (
        "- {kind: allow, duration: 8h}",
        13,
        "windows[0]",
        "missing schedule",
        "five fields",
    ),
    (
        "- {kind: deny, from: 2026-12-23T00:00}",
        13,
        "windows[0]",
        "missing 'to': a freeze needs both ends",
        "2026-12-23T00:00",
    ),
    (
        "- {kind: allow, from: 2026-12-23T00:00, to: 2027-01-02T00:00}",
        13,
        "windows[0].kind",
        "a one-off window (from/to) must be kind: deny",
        "nothing could ever be deployed again",
    ),
    (
        '- {kind: deny, schedule: "0 9 * * *", duration: 1h, from: 2026-12-23T00:00}',
        13,
        "windows[0]",
        "either recurs (schedule + duration) or happens once (from + to)",
        "split it",
    ),
    (
        "- {kind: deny}",
        13,
        "windows[0]",
        "needs a schedule and a duration, or a from and a to",
        "{kind: deny, from: 2026-12-23T00:00",
    ),
    (
        '- {kind: block, schedule: "0 9 * * *", duration: 1h}',
        13,
        "windows[0].kind",
        "unsupported kind 'block'",
        "allow, deny",
    ),
    (
        '- {kind: deny, schedule: "0 9 * * *", duration: 1h, environments: [prod]}',
        13,
        "windows[0].environments[0]",
        "windows[0] names unknown environment 'prod'",
        "did you mean 'production'?",
    ),
    (
        '- {kind: deny, name: lunch, schedule: "0 12 * * *", duration: 1h, services: [catalogue]}',
        13,
        "windows[0].services[0]",
        "lunch names unknown service 'catalogue'",
        "did you mean 'catalog'?",
    ),
    (
        '- {kind: deny, name: Lunch, schedule: "0 12 * * *", duration: 1h}',
        13,
        "windows[0].name",
        "'Lunch' is not a valid name",
        "use lowercase letters, digits and '-'",
    ),
    (
        '- {kind: deny, schedule: "0 12 * * *", duration: 1h, untill: 2027-01-01}',
        13,
        "windows[0].untill",
        "unknown field 'untill'",
        "allowed fields:",
    ),
]


@pytest.mark.parametrize(
    ("windows", "line", "field", "message", "hint"),
    BROKEN,
    ids=[f"{b[2]}:{b[3][:40]}" for b in BROKEN],
)
def test_mistakes_are_located_and_explained(
    windows: str, line: int, field: str, message: str, hint: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(config(windows), "conveyor.yaml")
    problems = caught.value.problems
    assert len(problems) == 1, [p.render() for p in problems]
    [problem] = problems
    assert (problem.file, problem.line, problem.field) == ("conveyor.yaml", line, field)
    assert message in problem.message
    assert problem.hint is not None and hint in problem.hint


def test_every_problem_is_reported_at_once() -> None:
    text = config(
        """\
        - {kind: deny, schedule: "0 9 * * *", duration: 25h, environments: [prod]}
        - {kind: deny, name: freeze, from: 2027-01-02T00:00, to: 2026-12-23T00:00}
        - {kind: allow, name: freeze, schedule: "0 9 * * *", duration: 1h, timezone: Mars/Base}
        """
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "conveyor.yaml")
    found = [(p.line, p.field) for p in caught.value.problems]
    assert found == [
        (13, "windows[0].duration"),
        (13, "windows[0].environments[0]"),
        (14, "windows[1].name"),
        (14, "windows[1].to"),
        (15, "windows[2].name"),
        (15, "windows[2].timezone"),
    ]


def test_a_window_spread_over_lines_points_at_the_field() -> None:
    text = config(
        """\
        - kind: allow
          schedule: "0 9 * * 1-5"
          duration: 8h
          timezone: Europe/Berlin
          environments: [staging, prodution]
        """
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "conveyor.yaml")
    [problem] = caught.value.problems
    assert (problem.line, problem.field) == (17, "windows[0].environments[1]")


# --- the calendar ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "gap"),
    [
        ("* * * * *", 60),
        ("*/15 * * * *", 15 * 60),
        ("0 9 * * *", 86400),
        ("0 9 * * 1-5", 86400),  # Friday to Monday is longer; Monday to Tuesday is the gap
        ("0 9,17 * * *", 8 * 3600),
        ("30 23 * * *", 86400),
        ("0 0,23 * * *", 3600),  # 23:00 to the next day's 00:00
        ("0 0 * * 1,3,5", 2 * 86400),
        ("@weekly", 7 * 86400),
        ("0 0 1,30 1,12 *", 2 * 86400),  # 30 December to 1 January
        ("0 0 L * *", 28 * 86400),  # the end of February to the end of March
        ("0 0 29 2 *", None),  # once in four years: nothing to overrun
    ],
)
def test_shortest_gap(expression: str, gap: float | None) -> None:
    assert shortest_gap(expression) == gap


@pytest.mark.parametrize(
    ("zone_name", "wall", "instant"),
    [
        ("Europe/Berlin", "2026-07-01T12:00", "2026-07-01T10:00"),
        ("Europe/Berlin", "2026-12-01T12:00", "2026-12-01T11:00"),
        # skipped when clocks go forward: the instant the clock jumps over it (03:00 CEST)
        ("Europe/Berlin", "2026-03-29T02:00", "2026-03-29T01:00"),
        ("Europe/Berlin", "2026-03-29T02:30", "2026-03-29T01:00"),
        ("Europe/Berlin", "2026-03-29T03:00", "2026-03-29T01:00"),
        # repeated when clocks go back: the first one (CEST)
        ("Europe/Berlin", "2026-10-25T02:30", "2026-10-25T00:30"),
        ("America/New_York", "2026-03-08T02:15", "2026-03-08T07:00"),
        ("America/New_York", "2026-11-01T01:30", "2026-11-01T05:30"),
        ("UTC", "2026-03-29T02:30", "2026-03-29T02:30"),
        # an explicit offset wins over the zone
        ("Europe/Berlin", "2026-03-29T02:30+05:00", "2026-03-28T21:30"),
    ],
)
def test_instant_of_a_wall_clock_time(zone_name: str, wall: str, instant: str) -> None:
    assert instant_of(dt.datetime.fromisoformat(wall), zone(zone_name)) == utc(instant)


def test_cron_starts_are_strictly_ascending_across_both_changes() -> None:
    every_half_hour = CronRecurrence("*/30 * * * *", zone("Europe/Berlin"))
    for begin in ("2026-03-28T22:00", "2026-10-24T22:00"):
        starts = every_half_hour.starts_after(utc(begin))
        seen = [next(starts) for _ in range(12)]
        assert seen == sorted(set(seen)), seen
        assert all(s > utc(begin) for s in seen)


def test_a_start_after_a_repeated_time_is_not_repeated() -> None:
    # 02:45 on 25 October happens at 00:45Z (CEST) and 01:45Z (CET); asked from between
    # the two, the next start is the following day's, not the second 02:45.
    daily = CronRecurrence("45 2 * * *", zone("Europe/Berlin"))
    assert next(daily.starts_after(utc("2026-10-25T01:10"))) == utc("2026-10-26T01:45")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(8 * 3600, "8h"), (5400, "1h30m"), (45, "45s"), (3661, "1h1m1s"), (0.5, "0.5s")],
)
def test_duration_text(seconds: float, text: str) -> None:
    assert duration_text(seconds) == text
