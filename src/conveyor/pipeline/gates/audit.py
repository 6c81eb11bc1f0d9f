"""``gate: audit``: pip-audit, only where it can run without the internet.

Without an offline vulnerability source the audit is ``skipped`` with the reason as evidence,
never ``success``: an audit that did not run must not pass.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

from conveyor.pipeline.gates.evidence import GateEvidence, GateRequest

AUDIT_SOURCE_ENV = "CONVEYOR_AUDIT_SOURCE"
"""Set (to a description of it) by an operator whose pip-audit reaches a vulnerability
source without the internet, e.g. through a local OSV mirror; unset, the audit is skipped."""
AUDIT_TIMEOUT = 300.0


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


def audit_gate(request: GateRequest) -> GateEvidence:
    return audit(request.workdir, request.environ)
