"""`conveyor doctor`: local checks of isolation, run_as users, permissions and tools.

``diagnose`` is pure and table-tested; the command itself runs for real (a fresh
interpreter, a real project, this host's users and tools) and must stay light: it reads the
config, never the store or the server's code.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conveyor.cli.commands.doctor import Check, Facts, RunAsFacts, diagnose
from conveyor.run_as import User
from tests.cli.support import conveyor
from tests.cli.test_structure import HEAVY, loaded, probe

ROOT = User("root", 0, 0, "root", "/root")
ALICE = User("alice", 1000, 1000, "alice", "/home/alice")
ALL_TOOLS = {"haproxy": "/usr/sbin/haproxy", "prometheus": "/usr/bin/prometheus"} | {
    "promtool": "/usr/bin/promtool"
}


def facts(**changes: object) -> Facts:
    base: dict[str, object] = {
        "server": ROOT,
        "server_pid": None,
        "services": {"catalog": "conveyor-run"},
        "jobs": ("conveyor-run",),
        "run_as": (RunAsFacts("conveyor-run", ("service catalog", "pipeline jobs")),),
        "state_mode": 0o700,
        "tools": ALL_TOOLS,
    }
    return Facts(**{**base, **changes})  # type: ignore[arg-type]


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {check.name: check for check in checks}


def test_all_well() -> None:
    checks = by_name(diagnose(facts()))
    assert {c.status for c in checks.values()} == {"ok"}
    assert "would run it as root" in checks["server user"].detail
    assert checks["isolation"].detail == "catalog as conveyor-run; pipeline jobs as conveyor-run"
    assert list(checks)[:2] == ["server user", "isolation"]


@pytest.mark.parametrize(
    ("changes", "name", "status", "needle"),
    [
        (
            {"services": {"catalog": None}, "run_as": ()},
            "isolation",
            "warn",
            "attestations are only as strong as root's isolation",
        ),
        ({"jobs": (None,)}, "isolation", "warn", "pipeline jobs run as root too"),
        (
            {"server": ALICE, "services": {"catalog": None}, "jobs": (), "run_as": ()},
            "isolation",
            "ok",
            "runs as alice, who owns .conveyor/",
        ),
        (
            {"run_as": (RunAsFacts("ghost", ("service catalog",), problem="there is no user"),)},
            "run_as ghost",
            "fail",
            "service catalog: there is no user",
        ),
        (
            {"run_as": (RunAsFacts("conveyor-run", ("x",), blocked="/root is drwx------"),)},
            "run_as conveyor-run",
            "fail",
            "cannot reach the project's .conveyor/: /root is drwx------",
        ),
        ({"state_mode": None}, ".conveyor/", "ok", "not created yet"),
        ({"loose": ("state.db", "server.json")}, ".conveyor/", "warn", "2 path(s)"),
        ({"tools": {}}, "haproxy", "warn", "router: haproxy"),
        ({"server_pid": 4242}, "server user", "ok", "the server (pid 4242) runs as root"),
        ({"config_problem": "conveyor.yaml:3: bad"}, "config", "fail", "conveyor.yaml:3: bad"),
    ],
    ids=[
        "root-without-run-as",
        "jobs-as-root",
        "not-root",
        "missing-user",
        "unreachable",
        "no-state",
        "loose",
        "no-haproxy",
        "running",
        "broken-config",
    ],
)
def test_diagnose(changes: dict[str, object], name: str, status: str, needle: str) -> None:
    check = by_name(diagnose(facts(**changes)))[name]
    assert check.status == status
    assert needle in check.detail
    if status != "ok":
        assert check.hint


def test_loose_paths_are_listed_up_to_five() -> None:
    loose = tuple(f"f{i}" for i in range(8))
    detail = by_name(diagnose(facts(loose=loose)))[".conveyor/"].detail
    assert "f4" in detail and "f5" not in detail and "and 3 more" in detail


CONFIG = """\
project: shop
{run_as}services:
  catalog: {{build: {{run: "true", outputs: [out/]}}, run: "true"}}
environments:
  dev:
"""


def project(root: Path, run_as: str | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    line = "" if run_as is None else f"run_as: {run_as}\n"
    (root / "conveyor.yaml").write_text(CONFIG.format(run_as=line))
    return root


def test_doctor_as_it_runs_here(tmp_path: Path) -> None:
    root = project(tmp_path / "p")
    result = conveyor("doctor", "--json", root=root)
    assert result.code == 0, result
    checks = {c["name"]: c for c in result.json()["checks"]}
    isolation = checks["isolation"]
    if os.geteuid() == 0:
        assert isolation["status"] == "warn"
        assert "the instances and builds of catalog run as root too" in isolation["detail"]
    else:
        assert isolation["status"] == "ok"
    assert checks[".conveyor/"]["detail"].startswith("not created yet")
    assert set(checks) >= {"server user", "haproxy", "prometheus", "promtool"}
    text = conveyor("doctor", root=root)
    assert text.code == 0 and "isolation" in text.stdout


def test_doctor_fails_on_a_user_this_host_lacks_and_on_loose_state(tmp_path: Path) -> None:
    root = project(tmp_path / "p", "no-such-user-xyz")
    state = root / ".conveyor"
    state.mkdir(mode=0o700)
    (state / "state.db").write_text("x")
    (state / "state.db").chmod(0o644)
    result = conveyor("doctor", root=root)
    assert result.code == 1, result
    assert "run_as no-such-user-xyz" in result.stdout
    assert "there is no user 'no-such-user-xyz' on this host" in result.stdout
    assert "1 path(s) give others more than Conveyor does: state.db" in result.stdout
    assert (state / "state.db").stat().st_mode & 0o777 == 0o644  # it changes nothing


def test_doctor_reports_a_broken_config_instead_of_crashing(tmp_path: Path) -> None:
    root = tmp_path / "p"
    root.mkdir()
    (root / "conveyor.yaml").write_text("project: shop\nservices: 3\n")
    result = conveyor("doctor", root=root)
    assert result.code == 1, result
    assert "config" in result.stdout and "Traceback" not in result.output


def test_doctor_loads_no_store_server_or_runtime(tmp_path: Path) -> None:
    root = project(tmp_path / "p")
    code, modules, output = probe(tmp_path, "-C", str(root), "doctor")
    assert code == 0, output
    heavy = [m for m in HEAVY if m != "pydantic"]  # it reads conveyor.yaml: pydantic it is
    assert loaded(modules, tuple(heavy)) == []
    assert loaded(modules, ("conveyor.store", "conveyor.controller", "conveyor.runtime")) == []
