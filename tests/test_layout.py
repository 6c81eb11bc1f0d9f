"""Permissions under .conveyor/: private by default, unpacked trees read-only, old files tightened.

``tighten`` is what the server runs at start over a state dir an earlier version wrote with
the default umask (files 0644, directories 0755, unpacked trees writable).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from conveyor.layout import (
    Layout,
    is_passage,
    make_read_only,
    open_passage,
    passage_mode,
    private_directory,
    private_file,
    read_only_mode,
    remove_tree,
    tighten,
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def old_state_dir(root: Path) -> Layout:
    """A .conveyor/ as an earlier Conveyor left it: everything readable by everyone."""
    layout = Layout(root)
    state = layout.state
    files = {
        "state.db": 0o644,
        "state.db-wal": 0o644,
        "server.json": 0o644,
        "server.log": 0o644,
        "runs/20240101T000000Z.json": 0o644,
        "builds/catalog-20240101.log": 0o644,
        "runtime/instances/c1.json": 0o644,
        "runtime/logs/catalog/dev/c1.log": 0o644,
        "keys/signing.key": 0o600,
        "keys/signing.pub": 0o644,
        "workspaces/w1/gradlew": 0o755,
        f"unpacked/{'a' * 64}/app/server.py": 0o644,
        f"unpacked/{'a' * 64}/run.sh": 0o755,
        "unpacked/.tmp-x/partial.py": 0o644,
    }
    for name, file_mode in files.items():
        path = state / name
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        path.write_text(name)
        path.chmod(file_mode)
    for directory in [state, *state.rglob("*")]:
        if directory.is_dir():
            directory.chmod(0o755)
    (state / "runtime" / "link").symlink_to("/etc/hostname")
    return layout


def test_tighten_takes_away_what_others_could_read(tmp_path: Path) -> None:
    layout = old_state_dir(tmp_path)
    state = layout.state
    result = tighten(layout)
    assert result.failed == []
    assert "state.db" in result.changed and "." in result.changed
    assert mode(state) == 0o700
    for name in (
        "state.db",
        "state.db-wal",
        "server.json",
        "server.log",
        "runs/20240101T000000Z.json",
        "builds/catalog-20240101.log",
        "runtime/instances/c1.json",
        "runtime/logs/catalog/dev/c1.log",
        "keys/signing.key",
        "keys/signing.pub",
    ):
        assert mode(state / name) == 0o600, name
    assert mode(state / "workspaces/w1/gradlew") == 0o700  # owner bits kept as they were
    for directory in ("runs", "runtime", "runtime/logs/catalog/dev", "keys", "unpacked"):
        assert mode(state / directory) == 0o700, directory
    tree = state / "unpacked" / ("a" * 64)
    assert (mode(tree), mode(tree / "app")) == (0o555, 0o555)
    assert mode(tree / "app/server.py") == 0o444
    assert mode(tree / "run.sh") == 0o555
    # an unpack in progress stays writable (private), the link is neither followed nor changed
    assert mode(state / "unpacked/.tmp-x") == 0o700
    assert mode(state / "unpacked/.tmp-x/partial.py") == 0o600
    assert mode(Path("/etc/hostname")) & 0o044 == 0o044
    # A second start has nothing left to do.
    assert tighten(layout).changed == []
    remove_tree(tree)
    assert not tree.exists()


def test_tighten_without_a_state_dir_does_nothing(tmp_path: Path) -> None:
    assert tighten(Layout(tmp_path)).changed == []


def test_new_state_is_private(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "project").ensure()
    assert mode(layout.state) == 0o700
    assert mode(layout.state / ".gitignore") == 0o600
    deep = private_directory(layout.state / "a" / "b" / "c")
    assert [mode(p) for p in (deep.parent.parent, deep.parent, deep)] == [0o700] * 3
    private_file(layout.state / "x.json", "{}")
    assert mode(layout.state / "x.json") == 0o600


def test_unpacked_trees_become_read_only(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "bin").mkdir(parents=True)
    (tree / "bin" / "tool").write_text("#!/bin/sh\n")
    (tree / "bin" / "tool").chmod(0o750)
    (tree / "data.txt").write_text("x")
    make_read_only(tree)
    assert [mode(tree), mode(tree / "bin")] == [0o555, 0o555]
    assert (mode(tree / "bin" / "tool"), mode(tree / "data.txt")) == (0o555, 0o444)
    assert read_only_mode(stat.S_IFREG | 0o600) == 0o444
    if os.geteuid() != 0:  # root writes anyway; the bits are what we can check there
        try:
            (tree / "data.txt").write_text("changed")
        except PermissionError:
            pass
        else:
            raise AssertionError("an unpacked file was writable")
    remove_tree(tree)
    assert not tree.exists()


def test_a_passage_lets_others_search_the_way_to_a_tree_and_nothing_else(tmp_path: Path) -> None:
    layout = Layout(tmp_path).ensure()
    tree = private_directory(layout.unpacked / ("b" * 64))
    private_directory(layout.runtime)
    opened = open_passage(tree)
    assert opened == [layout.unpacked, layout.state]
    assert (mode(layout.state), mode(layout.unpacked)) == (0o711, 0o711)
    assert mode(tree) == 0o700  # the tree's own mode is make_read_only's business
    assert mode(layout.runtime) == 0o700
    assert open_passage(tree) == []  # already open
    assert open_passage(tmp_path / "elsewhere" / "x") == []  # not under a .conveyor/
    # A workspace: .conveyor/, workspaces/ and the workspace's directory, not its tree.
    home = private_directory(layout.workspaces / "web-1234")
    open_passage(home / "tree")
    assert (mode(layout.workspaces), mode(home)) == (0o711, 0o711)


def test_tighten_keeps_a_passage_and_closes_anything_more(tmp_path: Path) -> None:
    layout = old_state_dir(tmp_path)  # everything 0755, as an earlier version left it
    state = layout.state
    assert passage_mode(stat.S_IFDIR | 0o755) == 0o700  # not ours: closed
    assert passage_mode(stat.S_IFDIR | 0o711) == 0o711  # ours: kept
    assert passage_mode(stat.S_IFDIR | 0o733) == 0o700  # more than search: closed
    tighten(layout)
    open_passage(state / "unpacked" / ("a" * 64))
    open_passage(state / "workspaces" / "w1" / "gradlew")
    assert tighten(layout).changed == []  # a second start leaves the passages alone
    for directory in (state, state / "unpacked", state / "workspaces", state / "workspaces/w1"):
        assert mode(directory) == 0o711, directory
    for directory in ("runs", "runtime", "keys", "unpacked/.tmp-x"):
        assert mode(state / directory) == 0o700, directory
    assert is_passage(state / "workspaces" / "w1", state)
    assert not is_passage(state / "workspaces" / "w1" / "tree", state)
    assert not is_passage(state / "keys", state)
    (state / "keys").chmod(0o711)  # a passage only where one belongs
    assert "keys" in tighten(layout).changed and mode(state / "keys") == 0o700
    assert tighten(layout, dry_run=True).changed == []
    remove_tree(state / "unpacked" / ("a" * 64))


def test_a_dry_run_reports_without_changing(tmp_path: Path) -> None:
    layout = old_state_dir(tmp_path)
    found = tighten(layout, dry_run=True)
    assert "state.db" in found.changed and "." in found.changed
    assert mode(layout.database) == 0o644
    remove_tree(layout.unpacked / ("a" * 64))


def test_writers_of_one_file_at_once_each_use_a_temp_file_of_their_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Eight builds starting together in one process each found .conveyor/ new and wrote its
    # .gitignore: the temp file was named after the pid, so the threads shared it, and the
    # first to rename it away left the others a FileNotFoundError. Here the second writer
    # runs whole at the worst moment: after the first has written its temp file, before the
    # rename that publishes it.
    target = Layout(tmp_path).ensure().state / "x.json"
    rename = os.replace
    interrupted: list[str] = []

    def another_writer_first(source: str | os.PathLike[str], dest: str | os.PathLike[str]) -> None:
        if not interrupted:
            interrupted.append(os.fspath(source))
            private_file(target, "second")
        rename(source, dest)

    monkeypatch.setattr(os, "replace", another_writer_first)
    private_file(target, "first")
    assert interrupted, "the second writer ran"
    assert target.read_text() == "first", "the last rename wins, whole"
    assert mode(target) == 0o600
    assert sorted(p.name for p in target.parent.iterdir()) == [".gitignore", "x.json"]
