"""What the run_as tests share: the unprivileged user, a project others can reach, a probe.

The tests that switch users need root (only root may) and an account to switch to:
``conveyor-run``, which ``.ci/run`` creates, or the one ``CONVEYOR_TEST_RUN_AS`` names.
Without them they skip, saying how to enable them.

``PROBE`` is a program run as that user (an instance, a job or a build runs it): it tries
to read its own tree and what it must not read under ``.conveyor/``, and prints one line
``PROBE {json}`` saying what happened; given ``PORT`` it then serves HTTP, so an instance
running it becomes ready.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor.layout import Layout, make_read_only, private_file, remove_tree
from conveyor.run_as import CREATE_HINT, UnknownUser, User, lookup

RUN_AS = os.environ.get("CONVEYOR_TEST_RUN_AS", "conveyor-run")
TOKEN = "cvy_run_as_test_token_never_readable"


def run_as_user() -> User | None:
    try:
        return lookup(RUN_AS)
    except UnknownUser:
        return None


USER = run_as_user()
SYSTEM_PYTHON = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")
"""A Python the unprivileged user can run (the test venv's may live under /root)."""

needs_run_as = pytest.mark.skipif(
    os.geteuid() != 0 or USER is None or SYSTEM_PYTHON is None,
    reason=f"needs root, the user {RUN_AS} and /usr/bin/python3: run the tests as root after "
    f"`{CREATE_HINT.replace('conveyor-run', RUN_AS)}` (.ci/run does both), or name another "
    "user with CONVEYOR_TEST_RUN_AS",
)


def the_user() -> User:
    assert USER is not None
    return USER


PROBE = r"""
import json, os, sys
state = os.environ["PROBE_STATE"]

def attempt(action):
    try:
        action()
    except OSError as exc:
        return type(exc).__name__
    return "ok"

def write(path):
    with open(path, "w") as handle:
        handle.write("x")

results = {
    "uid": os.getuid(),
    "gid": os.getgid(),
    "euid": os.geteuid(),
    "groups": os.getgroups(),
    "home": os.environ.get("HOME"),
    "user": os.environ.get("USER"),
    "read_own": attempt(lambda: open(sys.argv[0]).read()),
    "write_here": attempt(lambda: write("probe-wrote-this")),
    "read_state_db": attempt(lambda: open(os.path.join(state, "state.db")).read()),
    "read_token": attempt(lambda: open(os.path.join(state, "admin.token")).read()),
    "read_key": attempt(lambda: open(os.path.join(state, "keys", "signing.key")).read()),
    "list_state": attempt(lambda: os.listdir(state)),
    "list_unpacked": attempt(lambda: os.listdir(os.path.join(state, "unpacked"))),
    "secret": os.environ.get("PROBE_SECRET"),
}
print("PROBE " + json.dumps(results), flush=True)
if "PORT" in os.environ:
    import http.server
    server = http.server.HTTPServer(
        ("127.0.0.1", int(os.environ["PORT"])), http.server.SimpleHTTPRequestHandler
    )
    server.serve_forever()
"""


def probe_results(text: str) -> dict[str, Any] | None:
    """The probe's report in some output, or None when it has not printed it (yet)."""
    for line in text.splitlines():
        if line.startswith("PROBE "):
            try:
                result: dict[str, Any] = json.loads(line.removeprefix("PROBE "))
            except ValueError:  # not all of it written yet
                return None
            return result
    return None


def assert_isolated(found: dict[str, Any], user: User) -> None:
    """What the probe must have seen, running as ``user`` with its own tree readable."""
    assert (found["uid"], found["euid"], found["gid"]) == (user.uid, user.uid, user.gid)
    assert found["groups"] in ([], [user.gid])  # no supplementary groups of root's
    assert found["user"] == user.name
    assert found["read_own"] == "ok"
    for forbidden in ("read_state_db", "read_token", "read_key", "list_state", "list_unpacked"):
        assert found[forbidden] == "PermissionError", forbidden


def reachable_directory() -> Path:
    """A new directory every user may search (pytest's own tmp directories are 0700)."""
    root = Path(tempfile.mkdtemp(prefix="conveyor-run-as-"))
    root.chmod(0o755)
    return root


def reachable_project() -> Layout:
    """A project in a directory every user may search, with the private files a server
    keeps: the state, the admin token, a signing key."""
    layout = Layout(reachable_directory()).ensure()
    private_file(layout.database, "not for instances")
    private_file(layout.admin_token, TOKEN)
    layout.directory(layout.legacy_keys)
    private_file(layout.legacy_keys / "signing.key", "not for instances either")
    layout.directory(layout.unpacked)
    return layout


def unpack_probe(layout: Layout, name: str = "a" * 64) -> Path:
    """An unpacked tree holding the probe, read-only as the artifact store leaves it."""
    tree = layout.directory(layout.unpacked) / name
    tree.mkdir()
    (tree / "probe.py").write_text(PROBE)
    make_read_only(tree)
    return tree


def remove_project(layout: Layout) -> None:
    for tree in layout.unpacked.glob("*") if layout.unpacked.exists() else ():
        remove_tree(tree)
    shutil.rmtree(layout.root, ignore_errors=True)


@pytest.fixture
def project() -> Iterator[Layout]:
    layout = reachable_project()
    yield layout
    remove_project(layout)


@pytest.fixture
def reachable() -> Iterator[Path]:
    root = reachable_directory()
    yield root
    remove_project(Layout(root))
