"""Guarded flag rollouts: table tests of decide() and a property on the walk."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.core.flags.guarded import GuardSpec, GuardStatus, check_steps, decide, judge

SPEC = GuardSpec(steps=(1, 10, 50, 100), step_seconds=60, treatment="on", control="off")


@pytest.mark.parametrize(
    ("step", "started", "counts", "now", "action", "percentage"),
    [
        (0, 0, {}, 10, "wait", 1),
        (0, 0, {}, 60, "advance", 10),
        (1, 0, {"on": (1000, 5), "off": (9000, 40)}, 61, "advance", 50),
        (3, 0, {"on": (5000, 20), "off": (5000, 22)}, 61, "complete", 100),
        (1, 0, {"on": (400, 60), "off": (4000, 40)}, 5, "abort", 0),
        (2, 0, {"on": (20, 1), "off": (200, 0)}, 61, "advance", 100),  # one error is no proof
    ],
)
def test_decide(
    step: int,
    started: float,
    counts: dict[str, tuple[int, int]],
    now: float,
    action: str,
    percentage: int,
) -> None:
    decision = decide(SPEC, GuardStatus(step, started), counts, now)
    assert (decision.action, decision.percentage) == (action, percentage)
    if action == "abort":
        assert decision.verdict.evidence["canary_errors"] == counts["on"][1]
        assert "worse than off" in decision.message


def test_counts_accumulate_across_ticks() -> None:
    status = GuardStatus(0, 0, {"on": (10, 0)})
    decision = decide(SPEC, status, {"on": (5, 1), "off": (50, 0)}, 1)
    assert decision.status.counts == {"on": (15, 1), "off": (50, 0)}


@pytest.mark.parametrize(
    ("steps", "ok"),
    [((1, 10, 100), True), ((), False), ((10, 5), False), ((0, 5), False), ((5, 101), False)],
)
def test_check_steps(steps: tuple[int, ...], ok: bool) -> None:
    assert (check_steps(steps) is None) is ok


@given(st.lists(st.tuples(st.integers(0, 200), st.integers(0, 200)), max_size=30))
def test_a_healthy_variant_is_walked_to_the_end_in_order(ticks: list[tuple[int, int]]) -> None:
    status, now, seen = GuardStatus(0, 0), 0.0, [1]
    for requests, more in ticks:
        now += 61
        # Treatment and control fail alike (1 in 100): never worse.
        counts = {
            "on": (requests, requests // 100),
            "off": (requests + more, (requests + more) // 100),
        }
        decision = decide(SPEC, status, counts, now)
        assert decision.action != "abort"
        if decision.action == "complete":
            break
        status = decision.status
        seen.append(decision.percentage)
    assert seen == sorted(seen)


@given(
    st.dictionaries(
        st.sampled_from(["on", "off", "other"]),
        st.integers(0, 5000).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n))),
        max_size=3,
    )
)
def test_the_verdict_shown_is_the_one_decide_acted_on(counts: dict[str, tuple[int, int]]) -> None:
    """The dashboard asks ``judge`` of the stored counts; ``decide`` asked it of the same."""
    decision = decide(SPEC, GuardStatus(1, 0), {}, 5)
    assert decision.verdict == judge(SPEC, {})
    decision = decide(SPEC, GuardStatus(1, 0, counts), {}, 5)
    assert decision.verdict == judge(SPEC, counts)
