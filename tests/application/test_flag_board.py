"""The dashboard's flag records: a guarded rollout's progress from its stored spec and
status (step, percentage, counts per variant with roles, the judge's verdict)."""

from __future__ import annotations

import pytest

from conveyor.application.flag_board import progress
from conveyor.core.flags.guarded import GuardSpec, GuardStatus
from conveyor.store.records import FlagRolloutRecord

SPEC = GuardSpec(steps=(1, 10, 50, 100), step_seconds=60, treatment="on", control="off")


def _record(phase: str, step: int, counts: dict[str, tuple[int, int]]) -> FlagRolloutRecord:
    status = GuardStatus(step, 100.0, counts).to_json(SPEC)
    return FlagRolloutRecord(
        id=7,
        flag="new-checkout",
        env="production",
        phase=phase,
        spec={**SPEC.to_json(), "analysis": "errors"},
        status={**status, "message": "held"},
        version=3,
        created_at=50.0,
        created_by="ana",
        updated_at=120.0,
    )


@pytest.mark.parametrize(
    ("phase", "step", "counts", "verdict", "rows"),
    [
        # Nothing reported yet: both variants shown, with no rate, and no proof either way.
        ("running", 0, {}, "inconclusive", [("on", "treatment", 0, 0), ("off", "control", 0, 0)]),
        (
            "running",
            2,
            {"off": (9000, 40), "on": (1000, 5), "beta": (3, 0)},
            "pass",
            [("on", "treatment", 1000, 5), ("off", "control", 9000, 40), ("beta", "", 3, 0)],
        ),
        (
            "aborted",
            1,
            {"on": (400, 60), "off": (4000, 40)},
            "fail",
            [("on", "treatment", 400, 60), ("off", "control", 4000, 40)],
        ),
    ],
)
def test_progress(
    phase: str,
    step: int,
    counts: dict[str, tuple[int, int]],
    verdict: str,
    rows: list[tuple[str, str, int, int]],
) -> None:
    shown = progress(_record(phase, step, counts))
    assert (shown.step, shown.percentage, shown.steps) == (step + 1, SPEC.steps[step], SPEC.steps)
    assert [(c.variant, c.role, c.requests, c.errors) for c in shown.counts] == rows
    assert shown.verdict == verdict and shown.verdict_detail
    assert shown.analysis == "errors" and shown.message == "held" and shown.phase == phase
    rates = [c.error_rate for c in shown.counts]
    assert rates == [c[3] / c[2] if c[2] else None for c in rows]
