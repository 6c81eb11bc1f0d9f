"""Deterministic archives: same inputs, same bytes; and the outputs that must be refused."""

from __future__ import annotations

import gzip
import os
import shutil
import tarfile
from pathlib import Path

import pytest

from conveyor.artifacts.archive import create_archive, file_digest
from conveyor.errors import BuildFailed


def make_tree(root: Path) -> Path:
    (root / "app" / "static").mkdir(parents=True)
    (root / "app" / "main.py").write_text("print('hi')\n")
    (root / "app" / "static" / "style.css").write_text("body {}\n")
    (root / "app" / "__pycache__").mkdir()
    (root / "app" / "__pycache__" / "main.cpython-311.pyc").write_bytes(b"\x00\x01")
    (root / "app" / "ünïcode.txt").write_text("ok\n")
    run = root / "bin" / "run"
    run.parent.mkdir()
    run.write_text("#!/bin/sh\necho run\n")
    run.chmod(0o700)
    (root / "app" / "link-to-main").symlink_to("main.py")
    (root / "notes.txt").write_text("not an output\n")
    return root


OUTPUTS = ["app/", "bin/run"]


def test_same_tree_gives_the_same_bytes(tmp_path: Path) -> None:
    base = make_tree(tmp_path / "src")
    a = create_archive(base, OUTPUTS, tmp_path / "a.tar.gz")
    b = create_archive(base, OUTPUTS, tmp_path / "b.tar.gz")
    assert a.path.read_bytes() == b.path.read_bytes()
    assert a.digest == b.digest == file_digest(a.path)
    assert a.size == a.path.stat().st_size
    assert a.files == 5  # main.py, style.css, the .pyc, ünïcode.txt, bin/run


def test_times_modes_and_location_do_not_change_the_digest(tmp_path: Path) -> None:
    first = make_tree(tmp_path / "one")
    reference = create_archive(first, OUTPUTS, tmp_path / "ref.tar.gz").digest

    second = tmp_path / "elsewhere" / "two"
    shutil.copytree(first, second, symlinks=True)
    for path in second.rglob("*"):
        if not path.is_symlink():
            os.utime(path, (1_000_000, 1_000_000))
    (second / "app" / "main.py").chmod(0o600)  # a different umask
    (second / "bin" / "run").chmod(0o755)
    assert create_archive(second, OUTPUTS, tmp_path / "two.tar.gz").digest == reference
    # Output order and spelling do not matter either.
    reordered = ["./bin/run", "app"]
    assert create_archive(second, reordered, tmp_path / "three.tar.gz").digest == reference


def test_changing_content_or_the_exec_bit_changes_the_digest(tmp_path: Path) -> None:
    base = make_tree(tmp_path / "src")
    before = create_archive(base, OUTPUTS, tmp_path / "a.tar.gz").digest
    (base / "app" / "main.py").write_text("print('bye')\n")
    changed = create_archive(base, OUTPUTS, tmp_path / "b.tar.gz").digest
    assert changed != before
    (base / "app" / "main.py").chmod(0o755)
    assert create_archive(base, OUTPUTS, tmp_path / "c.tar.gz").digest != changed


def test_entries_are_normalised(tmp_path: Path) -> None:
    base = make_tree(tmp_path / "src")
    info = create_archive(base, OUTPUTS, tmp_path / "a.tar.gz")
    raw = info.path.read_bytes()
    assert raw[:2] == b"\x1f\x8b"
    assert raw[3] & 0x08 == 0, "gzip header must not carry a file name"
    assert raw[4:8] == b"\x00\x00\x00\x00", "gzip header mtime must be 0"
    with tarfile.open(info.path) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == [
        "app",
        "app/__pycache__",
        "app/__pycache__/main.cpython-311.pyc",
        "app/link-to-main",
        "app/main.py",
        "app/static",
        "app/static/style.css",
        "app/ünïcode.txt",
        "bin",
        "bin/run",
    ]
    for member in members:
        assert (member.mtime, member.uid, member.gid) == (0, 0, 0)
        assert (member.uname, member.gname) == ("", "")
        assert not any(key in member.pax_headers for key in ("mtime", "atime", "ctime"))
    modes = {m.name: m.mode for m in members if not m.issym()}
    assert modes["app"] == modes["bin"] == 0o755
    assert modes["bin/run"] == 0o755
    assert modes["app/main.py"] == 0o644
    link = next(m for m in members if m.name == "app/link-to-main")
    assert link.issym() and link.linkname == "main.py"


def test_dot_git_is_skipped_but_declared_files_are_not(tmp_path: Path) -> None:
    base = make_tree(tmp_path / "src")
    (base / "app" / ".git").mkdir()
    (base / "app" / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (base / "app" / ".gitignore").write_text("*.pyc\n")
    info = create_archive(base, ["app"], tmp_path / "a.tar.gz")
    with tarfile.open(info.path) as tar:
        names = tar.getnames()
    assert "app/.gitignore" in names
    assert not any(".git/" in n or n.endswith(".git") for n in names)


def test_whole_directory_output(tmp_path: Path) -> None:
    base = make_tree(tmp_path / "src")
    info = create_archive(base, ["."], tmp_path / "a.tar.gz")
    with tarfile.open(info.path) as tar:
        names = tar.getnames()
    assert "notes.txt" in names and "app/main.py" in names and "." not in names


def test_symlink_to_an_absolute_path_inside_is_made_relative(tmp_path: Path) -> None:
    base = make_tree(tmp_path / "src")
    (base / "app" / "abs").symlink_to(base / "bin" / "run")
    info = create_archive(base, ["app", "bin"], tmp_path / "a.tar.gz")
    with tarfile.open(info.path) as tar:
        assert tar.getmember("app/abs").linkname == "../bin/run"


def test_a_symlink_leaving_the_base_is_refused(tmp_path: Path) -> None:
    base = make_tree(tmp_path / "src")
    (tmp_path / "secret").write_text("password\n")
    (base / "app" / "escape").symlink_to(tmp_path / "secret")
    with pytest.raises(BuildFailed) as info:
        create_archive(base, ["app"], tmp_path / "a.tar.gz")
    assert "app/escape" in info.value.message
    assert "outside" in info.value.message
    assert "check build.outputs in conveyor.yaml" in (info.value.hint or "")


def test_an_output_behind_a_symlinked_directory_outside_is_refused(tmp_path: Path) -> None:
    base = make_tree(tmp_path / "src")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "f").write_text("x")
    (base / "out").symlink_to(tmp_path / "outside")
    with pytest.raises(BuildFailed) as info:
        create_archive(base, ["out/f"], tmp_path / "a.tar.gz")
    assert "check build.outputs in conveyor.yaml" in (info.value.hint or "")


def test_a_missing_output_names_itself(tmp_path: Path) -> None:
    base = make_tree(tmp_path / "src")
    with pytest.raises(BuildFailed) as info:
        create_archive(base, ["app", "dist/"], tmp_path / "a.tar.gz")
    assert "'dist/'" in info.value.message
    assert "check build.outputs in conveyor.yaml" in (info.value.hint or "")


@pytest.mark.parametrize("output", ["/etc/passwd", "../elsewhere", "app/../../x", "  "])
def test_outputs_outside_the_base_are_refused(tmp_path: Path, output: str) -> None:
    base = make_tree(tmp_path / "src")
    with pytest.raises(BuildFailed) as info:
        create_archive(base, [output], tmp_path / "a.tar.gz")
    assert "check build.outputs in conveyor.yaml" in (info.value.hint or "")


def test_special_files_are_refused(tmp_path: Path) -> None:
    base = make_tree(tmp_path / "src")
    os.mkfifo(base / "app" / "pipe")
    with pytest.raises(BuildFailed) as info:
        create_archive(base, ["app"], tmp_path / "a.tar.gz")
    assert "app/pipe" in info.value.message


def test_archive_decompresses_with_the_standard_library(tmp_path: Path) -> None:
    base = make_tree(tmp_path / "src")
    info = create_archive(base, OUTPUTS, tmp_path / "a.tar.gz")
    assert len(gzip.decompress(info.path.read_bytes())) % 512 == 0
