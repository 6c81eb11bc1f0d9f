from __future__ import annotations

import json
from pathlib import Path

import pytest

from conveyor.core.model import ProbeSpec
from conveyor.runtime.local.records import InstanceRecord, RecordStore, check_name

from .conftest import catalog_spec


def test_record_round_trips_through_json(tmp_path: Path) -> None:
    spec = catalog_spec(
        "catalog-1",
        command=("python3", "app/server.py"),
        liveness=ProbeSpec(
            "/health/live",
            timeout=0.5,
            period=2,
            initial_delay=1,
            failure_threshold=4,
            success_threshold=1,
        ),
        environment={"GREETING": "hi"},
    )
    record = InstanceRecord(spec, 18080, pid=1234, start_ticks=99, restarts=2, started_at=5.5)
    store = RecordStore(tmp_path / "instances")
    store.write(record)
    assert store.load_all() == [record]
    string_command = InstanceRecord(catalog_spec("catalog-2", readiness=None), 1)
    store.write(string_command)
    assert store.load_all() == [record, string_command]


def test_write_replaces_atomically_and_delete_forgets(tmp_path: Path) -> None:
    store = RecordStore(tmp_path / "instances")
    record = InstanceRecord(catalog_spec("c1"), 18080)
    store.write(record)
    store.write(record.spawned(77, 1, 2.0))
    assert [p.name for p in (tmp_path / "instances").iterdir()] == ["c1.json"]
    assert json.loads((tmp_path / "instances" / "c1.json").read_text())["pid"] == 77
    store.delete("c1")
    store.delete("c1")  # idempotent
    assert store.load_all() == []


def test_unreadable_record_is_set_aside_not_fatal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = RecordStore(tmp_path / "instances")
    store.write(InstanceRecord(catalog_spec("good"), 1))
    (tmp_path / "instances" / "bad.json").write_text("{not json")
    (tmp_path / "instances" / ".half.json.tmp").write_text("{")
    assert [r.spec.instance_id for r in store.load_all()] == ["good"]
    assert (tmp_path / "instances" / "bad.corrupt").exists()
    assert not (tmp_path / "instances" / ".half.json.tmp").exists()
    assert "bad.json is unreadable" in caplog.text


@pytest.mark.parametrize("name", ["../etc", "a/b", "", ".hidden", "x" * 200, "a..b"])
def test_names_that_could_escape_a_directory_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="not usable as a file name"):
        check_name("instance id", name)


@pytest.mark.parametrize("name", ["catalog-1", "c.v2_x", "A9"])
def test_ordinary_names_are_accepted(name: str) -> None:
    check_name("instance id", name)
