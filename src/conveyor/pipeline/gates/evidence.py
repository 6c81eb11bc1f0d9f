"""What every gate returns, and the request it is given: the shape of gate evidence.

Evidence names what was looked at and what was found, never a secret's value: a finding is a
file, a line and the detector's name. Third-party verdicts are checked here (``valid``) so the
runner never records a result it does not understand as a pass.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

RESULTS = frozenset({"success", "failure", "skipped"})
MAX_FINDINGS = 200


@dataclass(frozen=True)
class Finding:
    """Where (file, line) a detector found something; a linter adds its message, its
    suggested fix (``help``), the statement and whether it blocks (``level``)."""

    file: str
    line: int
    detector: str
    message: str = ""
    help: str | None = None
    level: str = "error"  # "error" fails the gate; "warning" is recorded
    statement: str | None = None


@dataclass(frozen=True)
class GateEvidence:
    """What a gate checked (``checked``) and what it found; ``result`` is the job's."""

    gate: str
    result: str  # success | failure | skipped
    summary: str
    checked: tuple[str, ...] = ()
    findings: tuple[Finding, ...] = ()
    allowed: int = 0
    details: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class GateRequest:
    """What a job gives its gate: the project directory and the job's ``paths`` and ``allow``."""

    workdir: Path
    paths: tuple[str, ...] = ()
    allow: tuple[str, ...] = ()
    environ: Mapping[str, str] = field(default_factory=dict)


class Gate(Protocol):
    """A gate computes a verdict; a finding or an unmet precondition is evidence, not raised."""

    def __call__(self, request: GateRequest, /) -> GateEvidence: ...


def valid(gate: str, evidence: object, origin: str) -> GateEvidence:
    """Third-party code's verdict, checked: anything but a GateEvidence with a known result
    fails, since the runner must never record a result it does not understand as a pass."""
    if not isinstance(evidence, GateEvidence) or evidence.result not in RESULTS:
        shown = evidence.result if isinstance(evidence, GateEvidence) else type(evidence).__name__
        return GateEvidence(gate, "failure", f"{origin} returned no valid verdict ({shown!r})")
    return evidence if evidence.gate == gate else dataclasses.replace(evidence, gate=gate)


def crashed(gate: str, origin: str, error: Exception) -> GateEvidence:
    return GateEvidence(gate, "failure", f"{origin} crashed: {type(error).__name__}: {error}")
