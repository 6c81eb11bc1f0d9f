"""``windows:`` in conveyor.yaml: when deploys may start, as cron in a time zone, or a freeze.

Two forms, one model::

    windows:
      - {kind: allow, schedule: "0 9 * * 1-5", duration: 8h, timezone: Europe/Berlin,
         environments: [production], reason: "office hours, someone is around"}
      - {kind: deny, from: 2026-12-23T00:00, to: 2027-01-02T00:00,
         timezone: Europe/Berlin, reason: "year-end freeze"}

The judgement (deny wins, allow windows restrict) is ``core.windows``; this module answers
the calendar questions the core must not ask itself, because they read tzdata: which
instants a cron expression names in a time zone (``CronRecurrence``), and which instant a
local date and time without an offset is (``instant_of``). The rules, the same for both:

- the schedule is read on the zone's **wall clock** (croniter on naive local times), so a
  daily 09:00 window opens at 09:00 local on both sides of a daylight-saving change;
- a local time that **does not exist** (the hour skipped when clocks go forward) is the
  instant the clock jumps over it: a 02:00 or 02:30 start in Europe/Berlin on the last
  Sunday of March is 03:00 CEST;
- a local time that **happens twice** (the hour repeated when clocks go back) is its first
  occurrence, once, as cron runs it;
- ``duration`` is elapsed time: a 2h window starting at 01:30 on the night clocks go back
  closes at 02:30 CET, two real hours later.

Validation stays cheap (the server re-reads the file when it changes): croniter parses the
expression, and the shortest gap between two starts — which ``duration`` may not exceed —
is found from the expression's fields plus at most two years of matching *days*, never by
walking every minute of a year.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import re
import zoneinfo
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated, Literal

from croniter import CroniterBadDateError, CroniterError, croniter
from pydantic import (
    Field,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails

from conveyor.config.durations import PositiveDuration
from conveyor.config.fields import ConfigModel, Slug
from conveyor.config.suggest import ERROR_TYPE, HINT_KEY, choose_hint, closest, describe, invalid
from conveyor.core.windows import Once, Window

CRON_HINT = (
    "five fields: minute hour day-of-month month day-of-week, e.g. '0 9 * * 1-5' "
    "(09:00, Monday to Friday) or '*/30 * * * *'; @daily, @weekly ... work too"
)
TIME_HINT = (
    "write a local date and time such as 2026-12-23T00:00 (read in the window's timezone), "
    "or give an offset: 2026-12-23T00:00+01:00, 2026-12-23T00:00Z"
)
ZONE_EXAMPLES = "an IANA time zone name such as Europe/Berlin, America/New_York or UTC"
_REFERENCE = dt.datetime(2024, 1, 1)  # a Monday in a leap year: where gaps are measured
_GAP_SEARCH = dt.datetime(2026, 1, 2)  # two years of days, a leap day among them


class WindowConfig(ConfigModel):
    """A time when deploys may (allow) or may not (deny) start; see docs/config.md."""

    kind: Literal["allow", "deny"] = Field(
        description="allow: deploys to the environments and services named may start only "
        "inside an allow window; deny: never inside this one (deny wins)."
    )
    name: Slug | None = Field(
        None,
        description="How events and `conveyor windows` name it (default: its place, windows[N]).",
        examples=["office-hours"],
    )
    schedule: str | None = Field(
        None,
        description="A recurring window: when it opens, as a five-field cron expression read "
        "on the wall clock of `timezone`. Needs `duration`.",
        examples=["0 9 * * 1-5"],
    )
    duration: PositiveDuration | None = Field(
        None,
        description="A recurring window: how long it stays open after each start (elapsed "
        "time; at most the time between two starts).",
        examples=["8h"],
    )
    from_: str | None = Field(
        None,
        alias="from",
        description="A one-off window (kind: deny only): when it starts, an ISO date and time; "
        "without an offset it is read in `timezone`.",
        examples=["2026-12-23T00:00"],
    )
    to: str | None = Field(
        None,
        description="A one-off window: when it ends (exclusive), after `from`.",
        examples=["2027-01-02T00:00"],
    )
    timezone: str = Field(
        "UTC",
        description="The IANA time zone the schedule and a `from`/`to` without offset are read in.",
        examples=["Europe/Berlin"],
    )
    environments: list[str] = Field(
        default_factory=list,
        description="The environments it applies to (empty: all).",
        examples=[["production"]],
    )
    services: list[str] = Field(
        default_factory=list,
        description="The services it applies to (empty: all).",
        examples=[["catalog"]],
    )
    reason: str = Field(
        "",
        max_length=500,
        description="Why, in words shown to whoever is refused a deploy by it.",
        examples=["year-end freeze: no changes while support is thin"],
    )

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None:
            _parse_cron(value)
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        zone(value)
        return value

    @field_validator("from_", "to")
    @classmethod
    def _time(cls, value: str | None) -> str | None:
        if value is not None:
            _parse_time(value)
        return value

    @model_validator(mode="after")
    def _one_form(self) -> WindowConfig:
        recurring = self.schedule is not None or self.duration is not None
        one_off = self.from_ is not None or self.to is not None
        if recurring and one_off:
            raise invalid(
                "a window either recurs (schedule + duration) or happens once (from + to), "
                "not both",
                "split it into two windows",
            )
        if not recurring and not one_off:
            raise invalid(
                "a window needs a schedule and a duration, or a from and a to",
                "e.g. {kind: allow, schedule: '0 9 * * 1-5', duration: 8h} or "
                "{kind: deny, from: 2026-12-23T00:00, to: 2027-01-02T00:00}",
            )
        if recurring:
            self._check_recurring()
        else:
            self._check_one_off()
        return self

    def _check_recurring(self) -> None:
        if self.schedule is None:
            raise _at("schedule", None, "missing schedule: when the window opens", CRON_HINT)
        if self.duration is None:
            raise _at(
                "duration",
                None,
                "missing duration: how long the window stays open after each start",
                "e.g. duration: 8h (units: h, m, s)",
            )
        gap = shortest_gap(self.schedule)
        if gap is not None and self.duration > gap:
            raise _at(
                "duration",
                self.duration,
                f"duration {duration_text(self.duration)} is longer than the "
                f"{duration_text(gap)} between two starts of {self.schedule!r}: one "
                "opening would run into the next",
                f"shorten it to at most {duration_text(gap)}, or choose a schedule whose "
                "starts are further apart (a window that should never close needs no window)",
            )

    def _check_one_off(self) -> None:
        if self.kind == "allow":
            raise _at(
                "kind",
                self.kind,
                "a one-off window (from/to) must be kind: deny, a freeze",
                "an allow window recurs (schedule + duration); once a one-off allow window "
                "had passed, nothing could ever be deployed again",
            )
        if self.from_ is None or self.to is None:
            missing = "from" if self.from_ is None else "to"
            raise _at(missing, None, f"missing '{missing}': a freeze needs both ends", TIME_HINT)
        start, end = self.start(), self.end()
        if end <= start:
            raise _at(
                "to",
                self.to,
                f"'to' ({self.to}) is not after 'from' ({self.from_})",
                "a freeze runs from 'from' up to 'to': swap them, or fix the date",
            )

    # --- what the core gets -------------------------------------------------------------

    def zone(self) -> zoneinfo.ZoneInfo:
        return zone(self.timezone)

    def start(self) -> float:
        assert self.from_ is not None
        return instant_of(_parse_time(self.from_), self.zone())

    def end(self) -> float:
        assert self.to is not None
        return instant_of(_parse_time(self.to), self.zone())

    def label(self, index: int) -> str:
        return self.name or f"windows[{index}]"

    def spec(self) -> str:
        if self.schedule is not None and self.duration is not None:
            return f"{self.schedule} for {duration_text(self.duration)}"
        return f"{self.from_} to {self.to}"

    def window(self, index: int) -> Window:
        """The core's record of this window; ``index`` is its place in ``windows:``."""
        if self.schedule is not None and self.duration is not None:
            recurrence: CronRecurrence | Once = CronRecurrence(self.schedule, self.zone())
            duration = self.duration
        else:
            recurrence, duration = Once(self.start()), self.end() - self.start()
        return Window(
            name=self.label(index),
            kind=self.kind,
            recurrence=recurrence,
            duration=duration,
            reason=self.reason,
            environments=frozenset(self.environments),
            services=frozenset(self.services),
            timezone=self.timezone,
            spec=self.spec(),
        )


def core_windows(windows: Sequence[WindowConfig]) -> tuple[Window, ...]:
    return tuple(w.window(index) for index, w in enumerate(windows))


def _checked(
    value: object, handler: ValidatorFunctionWrapHandler, info: ValidationInfo
) -> list[WindowConfig]:
    """The windows, with their names checked against the project's.

    Names in ``environments`` and ``services`` must be declared (a typo would silently make
    a freeze apply nowhere), and window names are unique. The names are read from the raw
    entries, so these problems are reported together with those of the entries themselves.
    """
    problems = _reference_problems(value, info)
    try:
        windows: list[WindowConfig] = handler(value)
    except ValidationError as exc:
        raise _together(exc, problems) from None
    if problems:
        raise ValidationError.from_exception_data("windows", problems)
    return windows


def _reference_problems(value: object, info: ValidationInfo) -> list[InitErrorDetails]:
    if not isinstance(value, list):
        return []
    entries = [w.model_dump(by_alias=True) if isinstance(w, WindowConfig) else w for w in value]
    problems: list[InitErrorDetails] = []
    names = [e.get("name") for e in entries if isinstance(e, dict)]
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            continue
        name = entry.get("name")
        label = name if isinstance(name, str) else f"windows[{index}]"
        for field in ("environments", "services"):
            declared, written = info.data.get(field), entry.get(field)
            if not isinstance(declared, dict) or not isinstance(written, list):
                continue  # checked once both are valid
            for position, item in enumerate(written):
                if isinstance(item, str) and item not in declared:
                    problems.append(
                        InitErrorDetails(
                            type=invalid(
                                f"{label} names unknown {field[:-1]} {item!r}",
                                choose_hint(item, declared, field),
                            ),
                            loc=(index, field, position),
                            input=item,
                        )
                    )
        if isinstance(name, str) and names.count(name) > 1:
            problems.append(
                InitErrorDetails(
                    type=invalid(
                        f"window name {name!r} is used more than once",
                        "give each window its own name (events and `conveyor windows` show it)",
                    ),
                    loc=(index, "name"),
                    input=name,
                )
            )
    return problems


def _together(exc: ValidationError, problems: list[InitErrorDetails]) -> ValidationError:
    """``exc``'s errors and ``problems`` as one error, so the loader reports them all."""
    if not problems:
        return exc
    merged: list[InitErrorDetails] = []
    for error in exc.errors():
        ctx = error.get("ctx") or {}
        kind = error["type"]
        merged.append(
            InitErrorDetails(
                type=invalid(error["msg"], ctx.get(HINT_KEY)) if kind == ERROR_TYPE else kind,
                loc=error["loc"],
                input=error["input"],
                ctx=ctx,
            )
        )
    try:
        return ValidationError.from_exception_data("windows", [*merged, *problems])
    except (KeyError, TypeError, ValueError):  # an error type pydantic cannot rebuild
        return exc


Windows = Annotated[list[WindowConfig], WrapValidator(_checked)]
"""The field ``ProjectConfig.windows`` (declared after ``services`` and ``environments``)."""


# --- calendar -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CronRecurrence:
    """The starts of a cron schedule read on the wall clock of ``zone`` (see module doc)."""

    expression: str
    zone: zoneinfo.ZoneInfo

    def starts_after(self, t: float) -> Iterator[float]:
        wall = dt.datetime.fromtimestamp(t, self.zone).replace(tzinfo=None)
        cron = croniter(self.expression, wall)
        last = t
        while True:
            try:
                local = cron.get_next(dt.datetime)
            except (CroniterBadDateError, OverflowError, ValueError):
                return  # no later match (an expression for 30 February), or past year 9999
            instant = instant_of(local, self.zone)
            # A repeated local time is used once (its first occurrence, maybe already past),
            # and the skipped ones all land on the same jump: keep the sequence strictly
            # ascending.
            if instant > last:
                last = instant
                yield instant


def instant_of(wall: dt.datetime, zone: zoneinfo.ZoneInfo) -> float:
    """Unix seconds of a wall-clock time in ``zone``; an aware ``wall`` keeps its offset.

    A time that happens twice is its first occurrence (``fold=0``). A time that does not
    happen (skipped when clocks go forward) is the instant the clock jumps over it, found
    by bisection between the two offsets (at most a few dozen look-ups, on whole seconds as
    tzdata transitions are).
    """
    if wall.tzinfo is not None:
        return wall.timestamp()
    first = wall.replace(tzinfo=zone, fold=0).timestamp()
    if _wall(first, zone) == wall:
        return first
    other = wall.replace(tzinfo=zone, fold=1).timestamp()
    low, high = math.floor(min(first, other)), math.ceil(max(first, other))
    # The clock reads before ``wall`` at ``low`` and after it at ``high``.
    while high - low > 1:
        middle = (low + high) // 2
        if _wall(middle, zone) >= wall:
            high = middle
        else:
            low = middle
    return float(high)


def _wall(t: float, zone: zoneinfo.ZoneInfo) -> dt.datetime:
    return dt.datetime.fromtimestamp(t, zone).replace(tzinfo=None)


def shortest_gap(expression: str) -> float | None:
    """Seconds between the two closest consecutive starts of ``expression``, on the wall
    clock; None when no two starts fall within two years (29 February only: nothing to
    overrun).

    Cron's minute and hour fields give the same times on every matching day, so the gap is
    the smaller of: the closest two times of one day, and the closest two matching days less
    the day's span (from the last time of one day to the first of the next).
    """
    cron = _parse_cron(expression)
    times = sorted(h * 60 + m for h in cron.hours for m in cron.minutes)
    within = min((b - a for a, b in itertools.pairwise(times)), default=math.inf)
    days = croniter(f"0 0 {cron.days}", _REFERENCE - dt.timedelta(minutes=1))
    closest_days, previous = math.inf, None
    while closest_days > 1:
        try:
            day = days.get_next(dt.datetime)
        except CroniterBadDateError:
            break
        if day > _GAP_SEARCH:
            break
        if previous is not None:
            closest_days = min(closest_days, (day - previous).days)
        previous = day
    across = closest_days * 1440 - (times[-1] - times[0])
    gap = min(within, across)
    return None if math.isinf(gap) else gap * 60.0


@dataclass(frozen=True)
class _Cron:
    """What validation keeps of a parsed expression: its times of day and its day fields."""

    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: str  # day-of-month, month and day-of-week, as croniter expanded them


def _values(field: Sequence[int | str], size: int) -> tuple[int, ...]:
    """croniter's expansion of a minute or hour field ('*' stands for every value)."""
    return tuple(range(size)) if field == ["*"] else tuple(int(v) for v in field)


@lru_cache(maxsize=256)
def _parse_cron(expression: str) -> _Cron:
    text = expression.strip()
    fields = text.split()
    if not text.startswith("@") and len(fields) != 5:
        raise invalid(
            f"schedule {describe(expression)} has {len(fields)} field(s), not 5",
            CRON_HINT + " (seconds and years are not supported)",
        )
    try:
        cron = croniter(text, _REFERENCE)
        if len(cron.expressions) != 5:
            raise CroniterError("seconds and years are not supported")
        cron.get_next(dt.datetime)
        return _Cron(
            _values(cron.expanded[0], 60),
            _values(cron.expanded[1], 24),
            " ".join(cron.expressions[2:5]),
        )
    except CroniterBadDateError:
        raise invalid(
            f"schedule {describe(expression)} never matches a date",
            "check the day and month (there is no 30 February); " + CRON_HINT,
        ) from None
    except (CroniterError, ValueError, KeyError, IndexError, TypeError, OverflowError) as exc:
        raise invalid(
            f"schedule {describe(expression)} is not a cron expression ({_croniter_words(exc)})",
            CRON_HINT,
        ) from None


def _croniter_words(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    return re.sub(r"^\[.*?\]\s*", "", text)  # croniter repeats the expression first


@lru_cache(maxsize=64)
def zone(name: str) -> zoneinfo.ZoneInfo:
    """The IANA zone called ``name``, or a config error that suggests the nearest name."""
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        pass
    meant = closest(name, zoneinfo.available_timezones())
    hint = f"did you mean {meant!r}? " if meant is not None else ""
    raise invalid(f"unknown time zone {describe(name)}", hint + ZONE_EXAMPLES)


def _parse_time(text: str) -> dt.datetime:
    try:
        return dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise invalid(f"{describe(text)} is not a date and time", TIME_HINT) from None


def _at(field: str, value: object, message: str, hint: str) -> ValidationError:
    """An error of one field of the window, raised from the check of the whole window."""
    return ValidationError.from_exception_data(
        "window", [InitErrorDetails(type=invalid(message, hint), loc=(field,), input=value)]
    )


def duration_text(seconds: float) -> str:
    """``8h``, ``1h30m``, ``45s``: how a duration is written in conveyor.yaml."""
    whole = round(seconds)
    if whole != seconds or whole == 0:
        return f"{seconds:g}s"
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{n}{unit}" for n, unit in ((hours, "h"), (minutes, "m"), (secs, "s")) if n]
    return "".join(parts)
