"""The gate registry: what runs for each name ``gate:`` accepts.

Built-ins first, then ``register_gate`` from code, then the ``conveyor.gates`` entry point
group (listed when a name is validated, imported when the gate first runs). A plugin's
exception or malformed verdict fails its job; a built-in's exception is a bug and is shown.

Which names are valid is config's to say (``conveyor.config.gates``: conveyor.yaml is
validated without importing this package): the built-in names are its constant, a gate
registered here is recorded there, and ``gate_names`` is its function, so a name the loader
accepts is always one this registry can run.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import cast

from conveyor.config.gates import (
    BUILTIN_GATE_NAMES,
    GATE_GROUP,
    LOCK,
    drop_gate_name,
    gate_names,
    is_recorded,
    record_gate_name,
)
from conveyor.errors import ConveyorError, GateUnavailable
from conveyor.pipeline.gates.audit import audit_gate
from conveyor.pipeline.gates.evidence import (
    Gate,
    GateEvidence,
    GateRequest,
    crashed,
    valid,
)
from conveyor.pipeline.gates.migrations import migration_safety
from conveyor.pipeline.gates.plugins import load, plugins
from conveyor.pipeline.gates.secret_scan import secret_scan_gate

BUILTIN_GATES: Mapping[str, Gate] = {
    "secret-scan": secret_scan_gate,
    "audit": audit_gate,
    "migration-safety": migration_safety,
}
"""The code of each of config's ``BUILTIN_GATE_NAMES`` (a test checks they match)."""
GATES = BUILTIN_GATE_NAMES
_gates: dict[str, Gate] = {}

__all__ = [
    "BUILTIN_GATES",
    "GATES",
    "GATE_GROUP",
    "gate_names",
    "register_gate",
    "run_gate",
    "unregister_gate",
]


def register_gate(name: str, gate: Gate) -> None:
    """Make ``gate: NAME`` valid; a built-in or an already registered name is refused."""
    with LOCK:
        if not name or name in BUILTIN_GATE_NAMES or is_recorded(name):
            raise ConveyorError(
                f"gate {name!r} is already registered" if name else "a gate needs a name",
                hint="choose another name, or unregister_gate() the old one first",
            )
        _gates[name] = gate
        record_gate_name(name)


def unregister_gate(name: str) -> None:
    with LOCK:
        _gates.pop(name, None)
        drop_gate_name(name)


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
