"""``gate: secret-scan``: detect-secrets over the job's paths; any finding outside ``allow``
fails. detect-secrets is imported only when the gate runs, so projects without it need not
install it."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

from conveyor.errors import GateUnavailable
from conveyor.pipeline.gates.evidence import (
    MAX_FINDINGS,
    Finding,
    GateEvidence,
    GateRequest,
)
from conveyor.pipeline.gates.files import MAX_FILE_BYTES, allowed, files_under, shown

# detect-secrets keeps its settings in a process-wide global; two scans must not interleave.
_SCAN_LOCK = threading.Lock()


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
    files = [p for p in files_under(workdir, paths) if p.stat().st_size <= MAX_FILE_BYTES]
    collection = SecretsCollection()
    with _SCAN_LOCK, default_settings():
        for path in files:
            collection.scan_file(str(path))
    findings: list[Finding] = []
    excused = 0
    for filename, secret in collection:
        name = shown(Path(filename), workdir)
        if allowed(name, allow):
            excused += 1
            continue
        findings.append(Finding(name, secret.line_number, secret.type))
    findings.sort(key=lambda f: (f.file, f.line, f.detector))
    total = len(findings)
    summary = f"{len(files)} files scanned, {total} possible secrets"
    if excused:
        summary += f" ({excused} more in allowed paths)"
    return GateEvidence(
        "secret-scan",
        "failure" if findings else "success",
        summary,
        checked=tuple(paths or ["."]),
        findings=tuple(findings[:MAX_FINDINGS]),
        allowed=excused,
    )


def secret_scan_gate(request: GateRequest) -> GateEvidence:
    return secret_scan(request.workdir, request.paths, request.allow)
