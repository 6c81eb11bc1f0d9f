"""The decisions of ``conveyor.run_as``, as tables: who may become whom, who may pass where,
and what is said when code runs as root."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from conveyor.run_as import (
    READ,
    SEARCH,
    WRITE,
    CannotSwitch,
    Step,
    User,
    barrier,
    barrier_in,
    current,
    lookup,
    needs_switch,
    permits,
    popen_arguments,
    require,
    root_warning,
    switch_problem,
)

ROOT = User("root", 0, 0, "root", "/root")
ALICE = User("alice", 1000, 1000, "alice", "/home/alice")
RUNNER = User("conveyor-run", 999, 995, "conveyor-run", "/home/conveyor-run")
DIR, FILE = stat.S_IFDIR, stat.S_IFREG


@pytest.mark.parametrize(
    ("target", "server", "allowed"),
    [
        (RUNNER, ROOT, True),  # root becomes anyone
        (ROOT, ROOT, True),
        (ALICE, ALICE, True),  # anyone "becomes" themselves: nothing changes
        (RUNNER, ALICE, False),
        (ROOT, ALICE, False),
        (User("alice", 1000, 995, "other", "/"), ALICE, False),  # another group is a switch
    ],
)
def test_only_root_switches_users(target: User, server: User, allowed: bool) -> None:
    problem = switch_problem(target, server)
    assert (problem is None) is allowed
    if problem is not None:
        assert "only root may start a process as another user" in problem
        assert f"uid {server.uid}" in problem


def test_a_switch_is_needed_only_to_another_uid_or_gid() -> None:
    assert needs_switch(RUNNER, ROOT)
    assert not needs_switch(ROOT, ROOT)
    assert not needs_switch(None, ROOT)
    assert popen_arguments(None) == {}
    assert popen_arguments(RUNNER) == {"user": 999, "group": 995, "extra_groups": []}


@pytest.mark.parametrize(
    ("mode", "owner", "group", "user", "want", "allowed"),
    [
        (DIR | 0o700, 0, 0, RUNNER, SEARCH, False),
        (DIR | 0o711, 0, 0, RUNNER, SEARCH, True),  # a passage: search ...
        (DIR | 0o711, 0, 0, RUNNER, READ, False),  # ... but not list
        (DIR | 0o750, 0, 995, RUNNER, READ | SEARCH, True),  # by its group
        (DIR | 0o705, 0, 995, RUNNER, READ, False),  # the group class applies, not others
        (DIR | 0o070, 999, 0, RUNNER, SEARCH, False),  # the owner class applies, not group
        (FILE | 0o600, 999, 995, RUNNER, READ | WRITE, True),
        (FILE | 0o444, 0, 0, RUNNER, READ, True),
        (FILE | 0o444, 0, 0, RUNNER, WRITE, False),
        (FILE | 0o000, 5, 5, ROOT, READ | WRITE, True),  # root reads and writes anything
        (FILE | 0o600, 5, 5, ROOT, SEARCH, False),  # ... but executes only with an x bit
        (FILE | 0o100, 5, 5, ROOT, SEARCH, True),
        (DIR | 0o000, 5, 5, ROOT, SEARCH, True),
    ],
)
def test_permits_follows_posix_classes(
    mode: int, owner: int, group: int, user: User, want: int, allowed: bool
) -> None:
    assert permits(mode, owner, group, user, want) is allowed


def test_the_barrier_is_the_first_directory_the_user_cannot_pass() -> None:
    steps = [
        Step(Path("/"), DIR | 0o755, 0, 0),
        Step(Path("/root"), DIR | 0o700, 0, 0),
        Step(Path("/root/p/.conveyor"), DIR | 0o711, 0, 0),
        Step(Path("/root/p/.conveyor/unpacked/x"), DIR | 0o555, 0, 0),
    ]
    blocked = barrier_in(steps, RUNNER, READ | SEARCH)
    assert blocked is not None and blocked.path == Path("/root")
    assert blocked.describe() == "/root is drwx------ (owner uid 0, gid 0)"
    steps[1] = Step(Path("/root"), DIR | 0o711, 0, 0)
    assert barrier_in(steps, RUNNER, READ | SEARCH) is None
    assert barrier_in(steps[:3], RUNNER, READ) == steps[2]  # the last must be listable


def test_barrier_reads_the_real_path(tmp_path: Path) -> None:
    me = current()
    (tmp_path / "tree").mkdir()
    assert barrier(tmp_path / "tree", me) is None
    assert "cannot be resolved" in (barrier(tmp_path / "missing", me) or "")
    if me.is_root:  # pytest's tmp is 0700: an unprivileged user stops at the first one
        found = barrier(tmp_path / "tree", RUNNER)
        assert found is not None and "drwx------" in found


def test_lookup_and_require_name_what_is_missing() -> None:
    me = current()
    assert lookup("root").uid == 0
    assert lookup("root:root").gid == 0
    with pytest.raises(LookupError, match="there is no user 'no-such-user-xyz'"):
        lookup("no-such-user-xyz")
    with pytest.raises(LookupError, match="there is no group 'no-such-group-xyz'"):
        lookup("root:no-such-group-xyz")
    with pytest.raises(CannotSwitch, match="there is no user"):
        require("no-such-user-xyz", me)
    assert require(me.name, me) is None  # oneself: nothing to switch
    if os.geteuid() != 0:
        with pytest.raises(CannotSwitch, match="only root"):
            require("root", me)
    else:
        assert require("nobody", me) is not None


@pytest.mark.parametrize(
    ("server", "services", "jobs", "said"),
    [
        (ALICE, {"catalog": None}, [None], None),  # not root: nothing to switch to
        (ROOT, {"catalog": "conveyor-run"}, ["conveyor-run"], None),
        (ROOT, {"catalog": "conveyor-run"}, [], None),  # no pipeline
        (ROOT, {"catalog": None}, [], "the instances and builds of catalog run as root too"),
        (
            ROOT,
            {"catalog": None, "pricing": None, "cart": "conveyor-run"},
            [None],
            "the instances and builds of catalog and pricing, and pipeline jobs run as root",
        ),
        (ROOT, {"catalog": "conveyor-run"}, [None], "and pipeline jobs run as root too"),
        (ROOT, {"catalog": "root:root"}, [], "the instances and builds of catalog run as root"),
    ],
)
def test_root_without_run_as_is_said_plainly(
    server: User, services: dict[str, str | None], jobs: list[str | None], said: str | None
) -> None:
    warning = root_warning(server, services, jobs)
    if said is None:
        assert warning is None
        return
    assert warning is not None and said in warning
    assert "attestations are only as strong as root's isolation" in warning
    assert "run_as:" in warning and "SECURITY.md" in warning
