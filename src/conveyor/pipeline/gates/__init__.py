"""Gate jobs (``gate: secret-scan``, ``gate: audit``, ``gate: migration-safety``, plugins)
and the evidence they leave.

A gate is a job whose verdict Conveyor computes itself, so that what it checked is recorded
in a known shape rather than buried in a log. Evidence names what was looked at and what
was found, never a secret's value: a finding is a file, a line and the detector's name.

A gate that cannot run honestly is ``skipped`` with its reason as evidence, never ``success``:
the dependency audit needs a vulnerability database, and without an offline one configured
it says so instead of pretending the dependencies are clean. ``migration-safety`` is the same:
Conveyor finds the migrations, but judging them is a checker's job, and with none installed
the gate says so rather than passing them.

Gates are a registry of one-method callables (``Gate``) so that a project or a distribution
can add one without touching the runner: built-ins, then ``register_gate`` from code, then
the ``conveyor.gates`` entry point group. Entry points are listed (not imported) when a name
is validated and imported only when their gate runs, once; a plugin that fails to import is
a ``GatePluginError`` naming the entry point, which fails its job rather than the run.

detect-secrets and pip-audit are imported or looked up only when a gate runs, so a project
without gates does not need them.

Where things live: ``evidence`` (what a gate is given and returns), ``files`` (which files a
gate reads), one module per built-in gate (``secret_scan``, ``audit``, ``migrations``),
``plugins`` (entry points) and ``registry`` (names, registration, ``run_gate``).
"""

from conveyor.errors import GatePluginError, GateUnavailable
from conveyor.pipeline.gates.audit import AUDIT_SOURCE_ENV, audit
from conveyor.pipeline.gates.evidence import (
    RESULTS,
    Finding,
    Gate,
    GateEvidence,
    GateRequest,
)
from conveyor.pipeline.gates.migrations import (
    CHECKER_GROUP,
    MigrationChecker,
    is_migration,
    migration_checkers,
    migration_safety,
    register_migration_checker,
    unregister_migration_checker,
)
from conveyor.pipeline.gates.plugins import forget_plugins
from conveyor.pipeline.gates.registry import (
    BUILTIN_GATES,
    GATE_GROUP,
    GATES,
    gate_names,
    register_gate,
    run_gate,
    unregister_gate,
)
from conveyor.pipeline.gates.secret_scan import secret_scan

__all__ = [
    "AUDIT_SOURCE_ENV",
    "BUILTIN_GATES",
    "CHECKER_GROUP",
    "GATES",
    "GATE_GROUP",
    "RESULTS",
    "Finding",
    "Gate",
    "GateEvidence",
    "GatePluginError",
    "GateRequest",
    "GateUnavailable",
    "MigrationChecker",
    "audit",
    "forget_plugins",
    "gate_names",
    "is_migration",
    "migration_checkers",
    "migration_safety",
    "register_gate",
    "register_migration_checker",
    "run_gate",
    "secret_scan",
    "unregister_gate",
    "unregister_migration_checker",
]
