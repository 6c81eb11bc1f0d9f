"""Built-in gate jobs (``gate: secret-scan``, ``gate: audit``) and the evidence they leave.

A gate is a job whose verdict Conveyor computes itself, so that what it checked is recorded
in a known shape rather than buried in a log. Evidence names what was looked at and what
was found, never a secret's value: a finding is a file, a line and the detector's name.

A gate that cannot run honestly is ``skipped`` with its reason as evidence, never ``success``:
the dependency audit needs a vulnerability database, and without an offline one configured
it says so instead of pretending the dependencies are clean.

detect-secrets and pip-audit are imported or looked up only when a gate runs, so a project
without gates does not need them.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import subprocess
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from conveyor.errors import ConveyorError

GATES = ("secret-scan", "audit")
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


def run_gate(
    gate: str,
    workdir: Path,
    *,
    paths: Sequence[str] = (),
    allow: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
) -> GateEvidence:
    if gate == "secret-scan":
        return secret_scan(workdir, paths, allow)
    if gate == "audit":
        return audit(workdir, os.environ if environ is None else environ)
    raise ConveyorError(f"unknown gate {gate!r}", hint=f"use one of: {', '.join(GATES)}")
