"""Built-in gates on real files with the real detect-secrets, and the audit's honest skip."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from conveyor.pipeline import PipelineSpec, RunResult, run_pipeline

pytestmark = pytest.mark.integration
pytest.importorskip("detect_secrets", reason="needs detect-secrets: pip install detect-secrets")

# Assembled at run time so this file is not itself a finding for any secret scanner.
AWS_KEY = "AKIA" + "Z3MHQW7XJ4PLKD2Q"
KEY_HEADER = "-----BEGIN " + "RSA PRIVATE KEY-----"
KEY_BODY = "MIIEowIBAAKCAQEAx7Q2vZpGJ3bLh0cN"


def run(root: Path, jobs: dict[str, dict[str, object]]) -> RunResult:
    spec = PipelineSpec.model_validate({"jobs": jobs, "fail_fast": False})
    return run_pipeline(spec, root, environ={"PATH": os.environ["PATH"]}, kill_grace=0.5)


def tree(root: Path, leaky: bool) -> Path:
    (root / "src").mkdir()
    (root / "src" / "app.py").write_text('def main() -> None:\n    print("hello")\n')
    (root / "README.md").write_text("# app\n\nNothing to see.\n")
    if leaky:
        (root / "src" / "settings.py").write_text(f'REGION = "eu"\nAWS_KEY = "{AWS_KEY}"\n')
        (root / "deploy.pem").write_text(
            f"{KEY_HEADER}\n{KEY_BODY}\n-----END RSA PRIVATE KEY-----\n"
        )
    return root


def test_a_credential_fails_the_scan_with_file_line_and_detector_but_never_the_value(
    tmp_path: Path,
) -> None:
    result = run(tree(tmp_path, leaky=True), {"scan": {"gate": "secret-scan"}})
    job = result.job("scan")
    assert result.result == "failure"
    assert job.result == "failure"
    assert job.gate is not None and job.gate.gate == "secret-scan"
    found = {(f.file, f.line, f.detector) for f in job.gate.findings}
    assert ("src/settings.py", 2, "AWS Access Key") in found
    assert ("deploy.pem", 1, "Private Key") in found
    assert "src/settings.py:2: AWS Access Key" in job.log
    dumped = json.dumps(result.to_dict(), default=str)
    for value in (AWS_KEY, KEY_BODY):
        assert value not in dumped
        assert value not in job.log


def test_a_clean_tree_passes_and_says_what_it_scanned(tmp_path: Path) -> None:
    result = run(tree(tmp_path, leaky=False), {"scan": {"gate": "secret-scan"}})
    job = result.job("scan")
    assert (result.result, job.result) == ("success", "success")
    assert job.gate is not None and job.gate.findings == ()
    assert job.gate.summary.startswith("2 files scanned, 0 possible secrets")


def test_paths_limit_the_scan_and_allow_excuses_a_fixture(tmp_path: Path) -> None:
    root = tree(tmp_path, leaky=True)
    only_src = run(root, {"scan": {"gate": "secret-scan", "paths": ["src"]}}).job("scan")
    assert only_src.gate is not None
    assert [f.file for f in only_src.gate.findings] == ["src/settings.py"]
    allowed = run(root, {"scan": {"gate": "secret-scan", "allow": ["*.pem", "src/settings.py"]}})
    gate = allowed.job("scan").gate
    assert allowed.result == "success" and gate is not None
    assert gate.findings == () and gate.allowed == 2


def test_the_audit_without_an_offline_database_is_skipped_with_its_reason(
    tmp_path: Path,
) -> None:
    result = run(
        tmp_path, {"audit": {"gate": "audit"}, "after": {"needs": ["audit"], "run": "true"}}
    )
    job = result.job("audit")
    assert job.result == "skipped"
    assert job.reason == "no offline vulnerability database; pip-audit needs network"
    assert job.gate is not None and job.gate.result == "skipped"
    assert result.result == "success"


def test_a_job_is_either_a_command_or_a_gate() -> None:
    for job in ({"run": "true", "gate": "audit"}, {}, {"run": "true", "allow": ["x"]}):
        with pytest.raises(ValidationError):
            PipelineSpec.model_validate({"jobs": {"j": job}})
    with pytest.raises(ValidationError):
        PipelineSpec.model_validate({"jobs": {"j": {"gate": "lint-everything"}}})
