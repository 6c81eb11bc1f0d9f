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
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Protocol, cast

from conveyor.errors import ConveyorError

RESULTS = frozenset({"success", "failure", "skipped"})
GATE_GROUP = "conveyor.gates"
CHECKER_GROUP = "conveyor.migration_checkers"
MAX_FINDINGS = 200
MAX_FILE_BYTES = 2_000_000
"""Larger files are data or build output, not where a credential is typed by hand."""
SKIPPED_DIRS = frozenset({".git", ".conveyor", ".venv", "venv", "node_modules", "__pycache__"})
AUDIT_SOURCE_ENV = "CONVEYOR_AUDIT_SOURCE"
"""Set (to a description of it) by an operator whose pip-audit reaches a vulnerability
source without the internet, e.g. through a local OSV mirror; unset, the audit is skipped."""
AUDIT_TIMEOUT = 300.0

# detect-secrets keeps its settings in a process-wide global; two scans must not interleave.
_SCAN_LOCK = threading.Lock()


class GateUnavailable(ConveyorError):
    """A gate's tool is not installed; the fix is installing it, so the hint says how."""

    exit_code = 2


class GatePluginError(GateUnavailable):
    """A plugin's entry point does not load; a GateUnavailable so the runner fails only its job."""


@dataclass(frozen=True)
class Finding:
    file: str
    line: int
    detector: str


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


def _files(workdir: Path, paths: Sequence[str]) -> list[Path]:
    found: list[Path] = []
    for entry in paths or ["."]:
        root = (workdir / entry).resolve()
        if root.is_file():
            found.append(root)
            continue
        for directory, dirs, names in os.walk(root):
            dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS)
            for name in sorted(names):
                path = Path(directory) / name
                if path.is_file() and not path.is_symlink():
                    found.append(path)
    return found


def _shown(path: Path, workdir: Path) -> str:
    try:
        return path.relative_to(workdir.resolve()).as_posix()
    except ValueError:
        return str(path)


def _allowed(shown: str, allow: Sequence[str]) -> bool:
    return any(fnmatch.fnmatch(shown, pattern) for pattern in allow)


def secret_scan(workdir: Path, paths: Sequence[str], allow: Sequence[str]) -> GateEvidence:
    """Any finding outside ``allow`` fails; a file it cannot read is simply not scanned."""
    try:
        from detect_secrets.core.secrets_collection import SecretsCollection
        from detect_secrets.settings import default_settings
    except ImportError:
        raise GateUnavailable(
            "gate 'secret-scan' needs detect-secrets, which is not installed",
            hint="pip install detect-secrets",
        ) from None
    files = [p for p in _files(workdir, paths) if p.stat().st_size <= MAX_FILE_BYTES]
    collection = SecretsCollection()
    with _SCAN_LOCK, default_settings():
        for path in files:
            collection.scan_file(str(path))
    findings: list[Finding] = []
    allowed = 0
    for filename, secret in collection:
        shown = _shown(Path(filename), workdir)
        if _allowed(shown, allow):
            allowed += 1
            continue
        findings.append(Finding(shown, secret.line_number, secret.type))
    findings.sort(key=lambda f: (f.file, f.line, f.detector))
    total = len(findings)
    summary = f"{len(files)} files scanned, {total} possible secrets"
    if allowed:
        summary += f" ({allowed} more in allowed paths)"
    return GateEvidence(
        "secret-scan",
        "failure" if findings else "success",
        summary,
        checked=tuple(paths or ["."]),
        findings=tuple(findings[:MAX_FINDINGS]),
        allowed=allowed,
    )


def audit(workdir: Path, environ: Mapping[str, str]) -> GateEvidence:
    """pip-audit against a local database when one is configured; otherwise skipped."""
    tool = shutil.which("pip-audit", path=environ.get("PATH"))
    source = environ.get(AUDIT_SOURCE_ENV)
    if tool is None or not source:
        missing = "pip-audit is not installed" if tool is None else f"${AUDIT_SOURCE_ENV} is unset"
        return GateEvidence(
            "audit",
            "skipped",
            "no offline vulnerability database; pip-audit needs network",
            details={"why": missing},
        )
    argv = [tool, "--strict"]
    requirements = workdir / "requirements.txt"
    if requirements.is_file():
        argv += ["-r", str(requirements)]
    try:
        done = subprocess.run(
            argv,
            cwd=workdir,
            env=dict(environ),
            capture_output=True,
            text=True,
            timeout=AUDIT_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return GateEvidence("audit", "failure", f"pip-audit timed out after {AUDIT_TIMEOUT:g}s")
    tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-20:])
    result = "success" if done.returncode == 0 else "failure"
    return GateEvidence(
        "audit",
        result,
        f"pip-audit exit {done.returncode}",
        checked=(str(requirements.name) if requirements.is_file() else "installed packages",),
        details={"source": source, "output": tail},
    )


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


class MigrationChecker(Protocol):
    """Judges the migration files ``migration-safety`` found (paths relative to the workdir).

    Its evidence's ``gate`` and ``checked`` are filled in by Conveyor; ``result``, ``summary``,
    ``findings`` and ``details`` are the checker's verdict.
    """

    def __call__(self, request: GateRequest, migrations: tuple[str, ...], /) -> GateEvidence: ...


# --- migration-safety: Conveyor finds the migrations, an installed checker judges them ------

MIGRATION_PATHS = ("migrations/",)
NO_CHECKER = "no migration-safety checker is installed"


def is_migration(path: Path) -> bool:
    """``*.sql``; ``*.py`` in a ``versions/`` folder (Alembic); ``NNNN_*.py`` in ``migrations/``
    (Django). Alembic's ``env.py`` and packages' ``__init__.py`` are not migrations."""
    if path.suffix == ".sql":
        return True
    if path.suffix != ".py" or path.name == "__init__.py":
        return False
    folder = path.parent.name
    return folder == "versions" or (folder == "migrations" and path.name[:1].isdigit())


def migration_safety(request: GateRequest) -> GateEvidence:
    """No migrations passes; migrations without a checker are skipped, never passed."""
    paths = request.paths or MIGRATION_PATHS
    found = [p for p in _files(request.workdir, paths) if is_migration(p)]
    migrations = tuple(sorted(_shown(p, request.workdir) for p in found))
    where = ", ".join(paths)
    if not migrations:
        return GateEvidence("migration-safety", "success", f"no migrations under {where}")
    checkers = migration_checkers()
    if not checkers:
        return GateEvidence(
            "migration-safety",
            "skipped",
            f"{len(migrations)} migrations not checked: {NO_CHECKER}",
            checked=migrations,
            details={"why": NO_CHECKER},
        )
    verdicts = [(name, _ask(name, check, request, migrations)) for name, check in checkers]
    return _excused(_combined(verdicts, migrations), request.allow)


def _ask(
    name: str, check: MigrationChecker, request: GateRequest, migrations: tuple[str, ...]
) -> GateEvidence:
    try:
        verdict: object = check(request, migrations)
    except GateUnavailable:
        raise
    except Exception as error:  # a third-party checker's bug fails the gate, not the run
        return _crashed("migration-safety", f"migration checker {name!r}", error)
    return _valid("migration-safety", verdict, f"migration checker {name!r}")


def _combined(
    verdicts: list[tuple[str, GateEvidence]], migrations: tuple[str, ...]
) -> GateEvidence:
    """Worst verdict wins: any failure fails, else any skip skips; findings are all kept."""
    results = {v.result for _, v in verdicts}
    result = next(r for r in ("failure", "skipped", "success") if r in results)
    if len(verdicts) == 1:
        name, only = verdicts[0]
        summary, details = only.summary, {"checker": name, **only.details}
    else:
        summary = "; ".join(f"{name}: {v.summary}" for name, v in verdicts)
        details = {f"{name}.{k}": val for name, v in verdicts for k, val in v.details.items()}
        details["checker"] = ", ".join(name for name, _ in verdicts)
    findings = sorted(
        (f for _, v in verdicts for f in v.findings), key=lambda f: (f.file, f.line, f.detector)
    )
    return GateEvidence(
        "migration-safety",
        result,
        summary,
        checked=migrations,
        findings=tuple(findings[:MAX_FINDINGS]),
        details=details,
    )


def _excused(evidence: GateEvidence, allow: Sequence[str]) -> GateEvidence:
    """``allow`` excuses findings in matching files; a failure made only of them passes."""
    kept = tuple(f for f in evidence.findings if not _allowed(f.file, allow))
    allowed = len(evidence.findings) - len(kept)
    if not allowed:
        return evidence
    result = evidence.result
    if result == "failure" and not kept:
        result = "success"
    summary = f"{evidence.summary} ({allowed} findings in allowed paths)"
    return dataclasses.replace(
        evidence, result=result, summary=summary, findings=kept, allowed=allowed
    )


# --- the registry ---------------------------------------------------------------------------


def _secret_scan_gate(request: GateRequest) -> GateEvidence:
    return secret_scan(request.workdir, request.paths, request.allow)


def _audit_gate(request: GateRequest) -> GateEvidence:
    return audit(request.workdir, request.environ)


BUILTIN_GATES: Mapping[str, Gate] = {
    "secret-scan": _secret_scan_gate,
    "audit": _audit_gate,
    "migration-safety": migration_safety,
}
GATES = tuple(sorted(BUILTIN_GATES))

_LOCK = threading.RLock()  # gates run in threads; plugin discovery and loading happen once
_gates: dict[str, Gate] = {}
_checkers: dict[str, MigrationChecker] = {}
_discovered: dict[str, dict[str, EntryPoint]] = {}
_loaded: dict[tuple[str, str], object] = {}


def register_gate(name: str, gate: Gate) -> None:
    """Make ``gate: NAME`` valid; a built-in or an already registered name is refused."""
    with _LOCK:
        if not name or name in BUILTIN_GATES or name in _gates:
            raise ConveyorError(
                f"gate {name!r} is already registered" if name else "a gate needs a name",
                hint="choose another name, or unregister_gate() the old one first",
            )
        _gates[name] = gate


def unregister_gate(name: str) -> None:
    with _LOCK:
        _gates.pop(name, None)


def register_migration_checker(check: MigrationChecker, *, name: str | None = None) -> str:
    """Add a checker for ``migration-safety``; returns the name its evidence will carry."""
    shown = name or f"{getattr(check, '__module__', '?')}.{getattr(check, '__qualname__', '?')}"
    with _LOCK:
        if shown in _checkers:
            raise ConveyorError(f"migration checker {shown!r} is already registered")
        _checkers[shown] = check
    return shown


def unregister_migration_checker(name: str) -> None:
    with _LOCK:
        _checkers.pop(name, None)


def forget_plugins() -> None:
    """Discover entry points afresh on next use, e.g. after installing a plugin (and in tests)."""
    with _LOCK:
        _discovered.clear()
        _loaded.clear()


def _plugins(group: str) -> dict[str, EntryPoint]:
    with _LOCK:
        if group not in _discovered:
            found: dict[str, EntryPoint] = {}
            for point in sorted(entry_points(group=group), key=lambda p: (p.name, p.value)):
                found.setdefault(point.name, point)  # two distributions, one name: first wins
            _discovered[group] = found
        return _discovered[group]


def _load(group: str, point: EntryPoint) -> Callable[..., object]:
    with _LOCK:
        key = (group, point.name)
        if key not in _loaded:
            origin = f"entry point {point.name!r} ({point.value}) in group {group!r}"
            if point.dist is not None:
                origin += f" from distribution {point.dist.name!r}"
            try:
                loaded = point.load()
            except Exception as error:
                raise GatePluginError(
                    f"{origin} cannot be loaded: {type(error).__name__}: {error}",
                    hint="fix or uninstall the distribution that declares it",
                ) from None
            if not callable(loaded):
                raise GatePluginError(
                    f"{origin} is a {type(loaded).__name__}, not a callable",
                    hint="point the entry point at a function taking a GateRequest",
                )
            _loaded[key] = loaded
        return cast(Callable[..., object], _loaded[key])


def migration_checkers() -> list[tuple[str, MigrationChecker]]:
    """Checkers registered from code, then entry points (loaded here, once)."""
    with _LOCK:
        found: list[tuple[str, MigrationChecker]] = list(_checkers.items())
        for name, point in _plugins(CHECKER_GROUP).items():
            if name not in _checkers:
                found.append((name, cast(MigrationChecker, _load(CHECKER_GROUP, point))))
        return found


def gate_names() -> tuple[str, ...]:
    """The names a ``gate:`` field accepts; plugins are listed here without being imported."""
    with _LOCK:
        return tuple(sorted({*BUILTIN_GATES, *_gates, *_plugins(GATE_GROUP)}))


def _valid(gate: str, evidence: object, origin: str) -> GateEvidence:
    """Third-party code's verdict, checked: anything but a GateEvidence with a known result
    fails, since the runner must never record a result it does not understand as a pass."""
    if not isinstance(evidence, GateEvidence) or evidence.result not in RESULTS:
        shown = evidence.result if isinstance(evidence, GateEvidence) else type(evidence).__name__
        return GateEvidence(gate, "failure", f"{origin} returned no valid verdict ({shown!r})")
    return evidence if evidence.gate == gate else dataclasses.replace(evidence, gate=gate)


def _crashed(gate: str, origin: str, error: Exception) -> GateEvidence:
    return GateEvidence(gate, "failure", f"{origin} crashed: {type(error).__name__}: {error}")


def _lookup(gate: str) -> tuple[Gate, bool]:
    """The gate's callable, and whether it is Conveyor's own (whose errors are bugs to show)."""
    with _LOCK:
        if gate in BUILTIN_GATES:
            return BUILTIN_GATES[gate], True
        if gate in _gates:
            return _gates[gate], False
        point = _plugins(GATE_GROUP).get(gate)
        if point is None:
            raise ConveyorError(
                f"unknown gate {gate!r}", hint=f"use one of: {', '.join(gate_names())}"
            )
        return cast(Gate, _load(GATE_GROUP, point)), False


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
        return _crashed(gate, f"gate {gate!r}", error)
    return _valid(gate, evidence, f"gate {gate!r}")
