"""`conveyor evidence` for releases, through the real command: the errors before any deploy.

The full pipeline -> deploy -> evidence story lives with the pipeline CLI story; here a
project that has built but never deployed must get clean, specific errors for both forms.
"""

from __future__ import annotations

from pathlib import Path

from tests.controller.harness import write_project

from .support import assert_clean_error, conveyor


def test_evidence_before_any_release_or_run_is_a_clean_error(tmp_path: Path) -> None:
    write_project(tmp_path, project="evidencecli")
    built = conveyor("build", "catalog", root=tmp_path)
    assert built.code == 0, built

    missing = conveyor("evidence", "catalog/staging", root=tmp_path)
    assert_clean_error(missing, 3)  # NotFound
    assert "catalog/staging has no release yet" in missing.output
    assert "SERVICE/ENV@r3" in missing.output

    as_json = conveyor("evidence", "catalog/staging@r2", "--json", root=tmp_path)
    assert as_json.code == 3, as_json
    assert as_json.json()["error"] == "NotFound"
    assert "catalog/staging has no release r2" in as_json.json()["message"]

    no_runs = conveyor("evidence", "latest", root=tmp_path)
    assert_clean_error(no_runs, 1)
    assert "no pipeline runs recorded" in no_runs.output

    neither = conveyor("evidence", "nope", root=tmp_path)
    assert_clean_error(neither, 1)
    assert "no pipeline run 'nope'" in neither.output
    assert "not a release either" in neither.output and "SERVICE/ENV" in neither.output
