from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from conveyor.runtime.local import tail
from conveyor.runtime.local.logs import append_marker, log_files, started_marker


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("data", "n", "expected"),
    [
        (b"", 5, []),
        (b"one\ntwo\n", 5, ["one", "two"]),
        (b"one\ntwo\nthree\n", 2, ["two", "three"]),
        (b"one\ntwo\nthree", 2, ["two", "three"]),  # no newline at the end
        (b"one\n\nthree\n", 2, ["", "three"]),  # blank lines are lines
        (b"a\nb\n", 0, []),
        (b"caf\xc3\xa9\n\xff\xfe\n", 2, ["caf\u00e9", "\ufffd\ufffd"]),
    ],
)
def test_tail(tmp_path: Path, data: bytes, n: int, expected: list[str]) -> None:
    assert tail(write(tmp_path / "x.log", data), n) == expected


def test_tail_of_a_large_file_reads_across_block_boundaries(tmp_path: Path) -> None:
    lines = [f"line {i} " + "x" * (i % 300) for i in range(5000)]
    path = write(tmp_path / "big.log", ("\n".join(lines) + "\n").encode())
    assert tail(path, 1) == lines[-1:]
    assert tail(path, 123) == lines[-123:]
    assert tail(path, 10_000) == lines


def test_tail_of_a_missing_file_is_empty(tmp_path: Path) -> None:
    assert tail(tmp_path / "nope.log", 10) == []


def test_started_marker_names_pid_port_time_and_restart() -> None:
    marker = started_marker(4242, 18080, 0.0, 3)
    assert (
        marker == "--- started pid 4242 port 18080 at 1970-01-01T00:00:00.000+00:00 (restart 3) ---"
    )
    assert re.fullmatch(r"--- started pid \d+ port \d+ at \S+ \(restart \d+\) ---", marker)


def test_log_files_lists_oldest_first_and_ignores_other_envs(tmp_path: Path) -> None:
    newer = tmp_path / "catalog" / "dev" / "b.log"
    older = tmp_path / "catalog" / "dev" / "a-later-name.log"
    append_marker(newer, "--- b ---")
    append_marker(older, "--- a ---")
    append_marker(tmp_path / "catalog" / "prod" / "c.log", "--- c ---")
    os.utime(older, (1000, 1000))
    assert log_files(tmp_path, "catalog", "dev") == [older, newer]
    assert log_files(tmp_path, "pricing", "dev") == []
    assert tail(newer, 5) == ["--- b ---"]
