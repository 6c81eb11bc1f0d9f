"""What the `conveyor` command imports, checked by structure rather than by the clock.

A command that only talks to the server must not load the database, the config models,
the signing code or a web framework: each one costs tens of milliseconds on every
invocation (issue 10). Each case runs the real command in a fresh interpreter against a
stub API, lets it do its whole job (tables drawn, errors mapped), and then lists what is
in ``sys.modules``. Timings live in bench/cli_startup.py.
"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conveyor.cli.main import COMMANDS, cli
from tests.cli.canned import DIGEST, project, serve_everything
from tests.cli.stub_api import StubApi, stub_api
from tests.cli.support import cli_env

HEAVY = ("sqlalchemy", "pydantic", "cryptography", "httpx", "starlette", "uvicorn", "alembic")
NOT_FOR_A_CLIENT = (
    "conveyor.store",
    "conveyor.controller",
    "conveyor.application",
    "conveyor.config",
    "conveyor.artifacts",
    "conveyor.pipeline",
    "conveyor.runtime",
    "ruamel",
)

PROBE = """
import json, sys
args, out = json.loads(sys.argv[1]), sys.argv[2]
sys.argv = ["conveyor", *args]
from conveyor.cli.main import main
code = 0
try:
    main()
except SystemExit as exc:
    code = exc.code if isinstance(exc.code, int) else 1
with open(out, "w") as f:
    json.dump({"code": code, "modules": sorted(sys.modules)}, f)
"""


def probe(tmp_path: Path, *args: str) -> tuple[int, list[str], str]:
    """Run ``conveyor ARGS`` in a fresh interpreter: exit code, loaded modules, stdout."""
    out = tmp_path / "probe.json"
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(list(args)), str(out)],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=60,
        check=False,
    )
    assert out.exists(), done.stderr
    result: dict[str, Any] = json.loads(out.read_text())
    return result["code"], result["modules"], done.stdout + done.stderr


def loaded(modules: list[str], prefixes: tuple[str, ...]) -> list[str]:
    return sorted({p for p in prefixes for m in modules if m == p or m.startswith(p + ".")})


SERVER_COMMANDS = [
    ["status"],
    ["status", "--json"],
    ["history", "catalog", "--env", "staging"],
    ["events"],
    ["deploy", "catalog", "--env", "staging"],
    ["deploy", "catalog", "--env", "staging", "--artifact", DIGEST, "--wait"],
    ["rollback", "catalog", "--env", "staging"],
    ["promote", "catalog", "--env", "staging"],
    ["pause", "catalog", "--env", "staging"],
    ["resume", "catalog", "--env", "staging"],
    ["abort", "catalog", "--env", "staging"],
    ["retry", "catalog", "--env", "staging"],
    ["logs", "catalog", "--env", "staging"],
    ["keys", "show"],
    ["tokens", "list"],
    ["whoami"],
]


def test_server_talking_commands_load_nothing_heavy(tmp_path: Path) -> None:
    root = project(tmp_path / "p")
    with stub_api(root) as stub:
        serve_everything(stub)
        for args in SERVER_COMMANDS:
            code, modules, output = probe(tmp_path, "-C", str(root), *args)
            assert code == 0, (args, output)
            assert loaded(modules, HEAVY) == [], args
            assert loaded(modules, NOT_FOR_A_CLIENT) == [], args
    # ... and they did their work: every command reached the API.
    paths = {(s.method, s.path) for s in stub.seen}
    assert ("GET", "/api/v1/status") in paths and ("POST", "/api/v1/control") in paths


def test_a_server_error_is_mapped_without_loading_anything_heavy(tmp_path: Path) -> None:
    root = project(tmp_path / "p")
    with stub_api(root, StubApi()):  # every route answers 404
        code, modules, output = probe(tmp_path, "-C", str(root), "status")
    assert code == 1, output
    assert loaded(modules, HEAVY) == []


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["status", "--help"]])
def test_version_and_help_import_no_command_they_do_not_show(
    tmp_path: Path, args: list[str]
) -> None:
    code, modules, output = probe(tmp_path, *args)
    assert code == 0, output
    commands = [m for m in modules if m.startswith("conveyor.cli.commands.")]
    assert commands == (["conveyor.cli.commands.views"] if args[0] == "status" else [])
    assert loaded(modules, ("rich", *HEAVY)) == []


def test_the_help_screen_lists_every_command_with_its_own_help() -> None:
    """The registry's one-liners are the commands' first help lines: they cannot drift."""
    for name, entry in COMMANDS.items():
        command = entry.load()
        assert command.name == name, entry.target
        first = inspect.cleandoc(command.help or "").split("\n\n")[0].replace("\n", " ")
        assert first == entry.help, name
    ctx = cli.make_context("conveyor", ["--help"], resilient_parsing=True)
    assert cli.list_commands(ctx) == sorted(COMMANDS)


def test_every_command_takes_the_project_options_after_its_name() -> None:
    ctx = cli.make_context("conveyor", [], resilient_parsing=True)
    for name in COMMANDS:
        command = cli.get_command(ctx, name)
        assert command is not None
        commands = [command, *getattr(command, "commands", {}).values()]
        for each in commands:
            flags = {flag for param in each.params for flag in param.opts}
            assert {"-C", "--file"} <= flags, (name, each.name)
