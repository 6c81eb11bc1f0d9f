"""The gate registry: which names ``gate:`` accepts and what runs for each.

Built-ins first, then ``register_gate`` from code, then the ``conveyor.gates`` entry point
group (listed when a name is validated, imported when the gate first runs). A plugin's
exception or malformed verdict fails its job; a built-in's exception is a bug and is shown.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import cast

from conveyor.errors import ConveyorError
from conveyor.pipeline.gates.audit import audit_gate
from conveyor.pipeline.gates.evidence import (
    Gate,
    GateEvidence,
    GateRequest,
    GateUnavailable,
    crashed,
    valid,
)
from conveyor.pipeline.gates.migrations import migration_safety
from conveyor.pipeline.gates.plugins import LOCK, load, plugins
from conveyor.pipeline.gates.secret_scan import secret_scan_gate

GATE_GROUP = "conveyor.gates"
BUILTIN_GATES: Mapping[str, Gate] = {
    "secret-scan": secret_scan_gate,
    "audit": audit_gate,
    "migration-safety": migration_safety,
}
GATES = tuple(sorted(BUILTIN_GATES))
_gates: dict[str, Gate] = {}


def register_gate(name: str, gate: Gate) -> None:
    """Make ``gate: NAME`` valid; a built-in or an already registered name is refused."""
    with LOCK:
        if not name or name in BUILTIN_GATES or name in _gates:
            raise ConveyorError(
                f"gate {name!r} is already registered" if name else "a gate needs a name",
                hint="choose another name, or unregister_gate() the old one first",
            )
        _gates[name] = gate


def unregister_gate(name: str) -> None:
    with LOCK:
        _gates.pop(name, None)


def gate_names() -> tuple[str, ...]:
    """The names a ``gate:`` field accepts; plugins are listed here without being imported."""
    with LOCK:
        return tuple(sorted({*BUILTIN_GATES, *_gates, *plugins(GATE_GROUP)}))


def _lookup(gate: str) -> tuple[Gate, bool]:
    """The gate's callable, and whether it is Conveyor's own (whose errors are bugs to show)."""
    with LOCK:
        if gate in BUILTIN_GATES:
            return BUILTIN_GATES[gate], True
        if gate in _gates:
            return _gates[gate], False
        point = plugins(GATE_GROUP).get(gate)
        if point is None:
            raise ConveyorError(
                f"unknown gate {gate!r}", hint=f"use one of: {', '.join(gate_names())}"
            )
        return cast(Gate, load(GATE_GROUP, point)), False


def run_gate(
    gate: str,
    workdir: Path,
    *,
    paths: Sequence[str] = (),
    allow: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
) -> GateEvidence:
    """Run a gate by name; a plugin's exception or malformed verdict is a failure, not a crash."""
    run, builtin = _lookup(gate)
    request = GateRequest(
        workdir, tuple(paths), tuple(allow), dict(os.environ if environ is None else environ)
    )
    if builtin:
        return run(request)
    try:
        evidence: object = run(request)
    except GateUnavailable:
        raise
    except Exception as error:
        return crashed(gate, f"gate {gate!r}", error)
    return valid(gate, evidence, f"gate {gate!r}")
