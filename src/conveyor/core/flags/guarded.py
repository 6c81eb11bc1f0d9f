"""A guarded flag rollout: a flag's percentage walked like a canary, judged like one.

``conveyor flag rollout FLAG --steps 1,10,50,100 --analysis errors`` stores a spec (the
steps, the time per step, the judge's parameters) and a status (the step, when it began,
the outcome counts per variant). Every tick the server calls ``decide`` with the status,
the counts SDKs reported (through their relays) since the last tick, and the time; the
answer is one ``Decision``:

* ``abort``: the treatment variant's error rate is worse than the control's — the same
  ``core.judge.compare_error_rate`` canaries use (beta-binomial posterior, alpha spent per
  look, ``max_delta`` tolerated) says ``fail``. The flag is turned off in the environment,
  and the ledger event carries the verdict's evidence;
* ``advance``: the step has lasted ``step_seconds`` and the judge did not fail: the next
  percentage (growing a sticky rollout only adds users, so those already exposed stay);
* ``complete``: the last step has lasted its time without a failure;
* ``wait``: otherwise.

Counts accumulate over the whole rollout (each step adds evidence); the judge's look
number grows with the treatment's traffic, so looking every tick does not inflate false
alarms. Pure: no clock, no I/O; the caller passes ``now``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from conveyor.core.judge import Verdict, compare_error_rate


@dataclass(frozen=True)
class GuardSpec:
    steps: tuple[int, ...]
    step_seconds: float
    treatment: str
    control: str
    max_delta: float = 0.01
    alpha: float = 0.05
    beta: float = 0.05
    min_requests: int = 1

    def to_json(self) -> dict[str, Any]:
        return {
            "steps": list(self.steps),
            "step_seconds": self.step_seconds,
            "treatment": self.treatment,
            "control": self.control,
            "max_delta": self.max_delta,
            "alpha": self.alpha,
            "beta": self.beta,
            "min_requests": self.min_requests,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> GuardSpec:
        return cls(
            tuple(int(s) for s in data["steps"]),
            float(data["step_seconds"]),
            str(data["treatment"]),
            str(data["control"]),
            float(data.get("max_delta", 0.01)),
            float(data.get("alpha", 0.05)),
            float(data.get("beta", 0.05)),
            int(data.get("min_requests", 1)),
        )


@dataclass(frozen=True)
class GuardStatus:
    step: int
    step_started_at: float
    counts: Mapping[str, tuple[int, int]] = field(default_factory=dict)  # variant: (req, err)

    def to_json(self, spec: GuardSpec) -> dict[str, Any]:
        return {
            "step": self.step,
            "percentage": spec.steps[self.step],
            "step_started_at": self.step_started_at,
            "counts": {v: list(c) for v, c in sorted(self.counts.items())},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> GuardStatus:
        counts = {str(v): (int(c[0]), int(c[1])) for v, c in (data.get("counts") or {}).items()}
        return cls(int(data["step"]), float(data["step_started_at"]), counts)


@dataclass(frozen=True)
class Decision:
    action: str  # wait | advance | complete | abort
    status: GuardStatus
    percentage: int
    verdict: Verdict
    message: str


def check_steps(steps: Sequence[int]) -> str | None:
    """Why ``steps`` cannot be walked, or None."""
    if not 1 <= len(steps) <= 20:
        return "give 1 to 20 steps"
    if any(not 0 < s <= 100 for s in steps):
        return "each step is a percentage from 1 to 100"
    if any(b <= a for a, b in pairwise(steps)):
        return "steps must grow (a sticky rollout only ever adds users)"
    return None


def add_counts(
    held: Mapping[str, tuple[int, int]], new: Mapping[str, tuple[int, int]]
) -> dict[str, tuple[int, int]]:
    out = dict(held)
    for variant, (requests, errors) in new.items():
        before = out.get(variant, (0, 0))
        out[variant] = (before[0] + requests, before[1] + errors)
    return out


def judge(spec: GuardSpec, counts: Mapping[str, tuple[int, int]]) -> Verdict:
    """The judge's verdict on the counts so far: the treatment's error rate against the
    control's. ``decide`` asks it every tick; the dashboard asks it again of the stored
    counts, so the verdict shown is the one the last tick acted on."""
    treated = counts.get(spec.treatment, (0, 0))
    control = counts.get(spec.control, (0, 0))
    return compare_error_rate(
        treated[1],
        treated[0],
        control[1],
        control[0],
        max_delta=spec.max_delta,
        alpha=spec.alpha,
        beta=spec.beta,
        min_requests=spec.min_requests,
    )


def decide(
    spec: GuardSpec,
    status: GuardStatus,
    new_counts: Mapping[str, tuple[int, int]],
    now: float,
) -> Decision:
    counts = add_counts(status.counts, new_counts)
    current = GuardStatus(status.step, status.step_started_at, counts)
    verdict = judge(spec, counts)
    percentage = spec.steps[status.step]
    if verdict.outcome == "fail":
        return Decision(
            "abort",
            current,
            0,
            verdict,
            f"{spec.treatment} is worse than {spec.control}: {verdict.detail}",
        )
    if now - status.step_started_at < spec.step_seconds:
        return Decision("wait", current, percentage, verdict, verdict.detail)
    if status.step + 1 >= len(spec.steps):
        return Decision("complete", current, percentage, verdict, f"done at {percentage}%")
    nxt = status.step + 1
    return Decision(
        "advance",
        GuardStatus(nxt, now, counts),
        spec.steps[nxt],
        verdict,
        f"step {nxt + 1}/{len(spec.steps)}: {spec.steps[nxt]}% ({verdict.detail})",
    )
