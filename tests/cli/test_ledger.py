"""`conveyor ledger verify` against a real server: intact, then an edited row is named."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from conveyor.layout import Layout
from tests.controller.harness import write_project

from .support import assert_clean_error, conveyor

pytestmark = pytest.mark.integration


def test_verify_names_an_edited_event(tmp_path: Path) -> None:
    write_project(tmp_path, project="ledgercli")
    assert conveyor("up", root=tmp_path).code == 0
    try:
        assert conveyor("build", "catalog", root=tmp_path).code == 0
        intact = conveyor("ledger", "verify", root=tmp_path)
        assert intact.code == 0, intact
        assert "ledger ok" in intact.stdout

        with sqlite3.connect(Layout(tmp_path).database) as db:
            seq, details = db.execute("select seq, details from events order by seq").fetchone()
            edited = json.loads(details)
            edited["forged"] = True
            db.execute("update events set details = ? where seq = ?", (json.dumps(edited), seq))
        broken = conveyor("ledger", "verify", "--full", root=tmp_path)
        assert broken.code == 14, broken
        assert f"ledger broken at seq {seq}" in broken.output
        as_json = conveyor("ledger", "verify", "--full", "--json", root=tmp_path)
        assert as_json.code == 14 and as_json.json()["first_bad_seq"] == seq
    finally:
        conveyor("down", root=tmp_path)


def test_verify_without_a_token_is_refused(tmp_path: Path) -> None:
    write_project(tmp_path, project="ledgernotoken")
    assert conveyor("up", root=tmp_path).code == 0
    try:
        Layout(tmp_path).admin_token.unlink()
        assert_clean_error(conveyor("ledger", "verify", root=tmp_path), 12)
    finally:
        conveyor("down", root=tmp_path)
