from __future__ import annotations

import pytest

from conveyor.core.model import ProbeSpec
from conveyor.runtime.local.policy import (
    Decision,
    ProbeCounter,
    RecordView,
    TaggedProcess,
    backoff_delay,
    next_streak,
    plan_adoption,
)


@pytest.mark.parametrize(
    ("streak", "delay"),
    [(0, 0.0), (1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (6, 10.0), (7, 10.0), (500, 10.0)],
)
def test_backoff_doubles_from_half_a_second_and_caps_at_ten(streak: int, delay: float) -> None:
    assert backoff_delay(streak) == delay


@pytest.mark.parametrize(
    ("streak", "ran_for", "expected"),
    [(0, 0.2, 1), (3, 5.0, 4), (3, 29.9, 4), (5, 30.0, 1), (9, 3600.0, 1)],
)
def test_a_healthy_run_resets_the_crash_streak(streak: int, ran_for: float, expected: int) -> None:
    assert next_streak(streak, ran_for) == expected


def _run(counter: ProbeCounter, results: str, spec: ProbeSpec) -> list[bool]:
    verdicts = []
    for r in results:
        counter = counter.observe(r == "+", spec)
        verdicts.append(counter.passing)
    return verdicts


@pytest.mark.parametrize(
    ("start", "success_threshold", "failure_threshold", "results", "verdicts"),
    [
        # readiness: unready until success_threshold successes in a row
        (False, 1, 3, "+", [True]),
        (False, 2, 3, "+-++", [False, False, False, True]),
        (False, 3, 3, "++-+++", [False, False, False, False, False, True]),
        # ready stays ready until failure_threshold failures in a row
        (True, 1, 3, "--+--", [True, True, True, True, True]),
        (True, 1, 3, "---", [True, True, False]),
        (True, 1, 1, "-", [False]),
        # and becomes ready again only through success_threshold successes
        (True, 2, 2, "--++", [True, False, False, True]),
        # a zero threshold behaves as 1
        (False, 0, 0, "+-", [True, False]),
    ],
)
def test_probe_counter_follows_kubernetes_thresholds(
    start: bool, success_threshold: int, failure_threshold: int, results: str, verdicts: list[bool]
) -> None:
    spec = ProbeSpec("/", success_threshold=success_threshold, failure_threshold=failure_threshold)
    assert _run(ProbeCounter(passing=start), results, spec) == verdicts


def test_probe_counter_counts_consecutive_failures() -> None:
    spec = ProbeSpec("/")
    counter = ProbeCounter(passing=False)
    for _ in range(4):
        counter = counter.observe(False, spec)
    assert (counter.failures, counter.successes) == (4, 0)
    counter = counter.observe(True, spec)
    assert (counter.failures, counter.successes) == (0, 1)


def tp(pid: int, instance: str, pgid: int | None = None, ticks: int = 100) -> TaggedProcess:
    return TaggedProcess(pid, pid if pgid is None else pgid, ticks, instance)


@pytest.mark.parametrize(
    ("records", "alive", "tagged", "decisions", "killed"),
    [
        pytest.param(
            [RecordView("a", 10, 100)],
            {"a": True},
            [tp(10, "a"), tp(11, "a", pgid=10)],
            [Decision("a", (10, 100))],
            [],
            id="recorded pid alive: adopt, keep its children",
        ),
        pytest.param(
            [RecordView("a", None, None)],
            {},
            [tp(20, "a", ticks=7)],
            [Decision("a", (20, 7))],
            [],
            id="pid never recorded: found by environment",
        ),
        pytest.param(
            [RecordView("a", 10, 100)],
            {"a": False},
            [tp(30, "a", ticks=9)],
            [Decision("a", (30, 9))],
            [],
            id="recorded pid reused by a stranger: environment wins",
        ),
        pytest.param(
            [RecordView("a", 10, 100)],
            {"a": False},
            [],
            [Decision("a", None)],
            [],
            id="nothing survives: respawn",
        ),
        pytest.param(
            [RecordView("a", 10, 100)],
            {"a": False},
            [tp(41, "a", pgid=40)],
            [Decision("a", None)],
            [41],
            id="leader dead, child left: respawn, kill the child",
        ),
        pytest.param(
            [RecordView("a", 10, 100)],
            {"a": True},
            [tp(10, "a"), tp(50, "b"), tp(51, "b", 50)],
            [Decision("a", (10, 100))],
            [50, 51],
            id="no record: orphan group killed",
        ),
        pytest.param(
            [RecordView("a", None, None)],
            {},
            [tp(61, "a", ticks=5), tp(60, "a", ticks=3)],
            [Decision("a", (60, 3))],
            [61],
            id="two leaders: adopt the oldest, kill the other",
        ),
        pytest.param(
            [RecordView("a", 10, 100, stopping=True)],
            {"a": True},
            [tp(10, "a")],
            [Decision("a", (10, 100), finish_stop=True)],
            [],
            id="interrupted stop is finished",
        ),
    ],
)
def test_plan_adoption(
    records: list[RecordView],
    alive: dict[str, bool],
    tagged: list[TaggedProcess],
    decisions: list[Decision],
    killed: list[int],
) -> None:
    plan = plan_adoption(records, alive, tagged)
    assert list(plan.decisions) == decisions
    assert sorted(p.pid for p in plan.kill) == killed
