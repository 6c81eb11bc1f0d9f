from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.core.model import SecretRef
from conveyor.errors import LaunchFailed
from conveyor.runtime.local.environment import (
    argv,
    child_environment,
    environment_problem,
    find_program,
    prepare,
    read_secrets,
)

from .conftest import CATALOG, catalog_spec


def test_environment_is_built_not_inherited() -> None:
    base = {
        "PATH": "/opt/bin:/usr/bin",
        "HOME": "/home/u",
        "LANG": "C.UTF-8",
        "VIRTUAL_ENV": "/work/.venv",
        "PYTHONPATH": "/work/src",
        "AWS_SECRET_ACCESS_KEY": "do-not-leak",
    }
    spec = catalog_spec("c1", environment={"GREETING": "hi"})
    env = child_environment(spec, 18080, Path("/state"), base)
    assert env == {
        "PATH": "/opt/bin:/usr/bin",
        "HOME": "/home/u",
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "CONVEYOR_VERSION": "1.0.0-test",
        "CONVEYOR_REVISION": "7",
        "GREETING": "hi",
        "PORT": "18080",
        "CONVEYOR_INSTANCE_ID": "c1",
        "CONVEYOR_PROJECT": "shop",
        "CONVEYOR_STATE_DIR": "/state",
    }


def test_configuration_cannot_forge_the_runtime_variables() -> None:
    spec = catalog_spec(
        "c1", environment={"PORT": "1", "CONVEYOR_INSTANCE_ID": "x", "CONVEYOR_STATE_DIR": "/y"}
    )
    env = child_environment(spec, 18080, Path("/state"), {})
    assert (env["PORT"], env["CONVEYOR_INSTANCE_ID"], env["CONVEYOR_STATE_DIR"]) == (
        "18080",
        "c1",
        "/state",
    )
    assert env["PATH"]  # a default PATH when the server has none


def test_argv_runs_strings_through_the_shell_and_execs_tuples() -> None:
    assert argv("python3 app/server.py --x 'a b'") == [
        "/bin/sh",
        "-c",
        "python3 app/server.py --x 'a b'",
    ]
    assert argv(("python3", "app/server.py")) == ["python3", "app/server.py"]
    with pytest.raises(ValueError, match="must not be empty"):
        argv(())


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({}, None),
        ({"A": "", "B_2": "x=y", "URL": "http://h/?a=b"}, None),  # '=' in a value is fine
        ({"A=B": "x"}, "config key 'A=B' is not usable"),
        ({"": "x"}, "config key '' is not usable"),
        ({"A\x00": "x"}, "is not usable"),
        ({"A": "x\x00y"}, "the value of A contains a NUL character"),
    ],
)
def test_environment_problem(env: dict[str, str], problem: str | None) -> None:
    found = environment_problem(env)
    assert (found is None) if problem is None else (found is not None and problem in found)


def test_find_program_follows_exec(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    tool = tmp_path / "bin" / "tool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    (tmp_path / "data").write_text("not a program")
    assert find_program("tool", f"/nowhere:{tmp_path / 'bin'}", tmp_path) == tool
    assert find_program("tool", "bin", tmp_path) == tool  # a relative PATH entry, from cwd
    assert find_program("./bin/tool", "", tmp_path) == tool
    assert find_program(str(tool), "", Path("/")) == tool
    assert find_program("sh", "/usr/bin:/bin", tmp_path) is not None
    assert find_program("tool", "/usr/bin", tmp_path) is None
    assert find_program("./data", "", tmp_path) is None  # not executable
    assert find_program("./bin", "", tmp_path) is None  # a directory


def test_secrets_are_read_from_the_server_environment_or_a_file(tmp_path: Path) -> None:
    secret_file = tmp_path / "key"
    secret_file.write_text("line1\nline2\n")
    values = read_secrets(
        {"A": SecretRef("env", "SRC"), "B": SecretRef("file", str(secret_file))},
        {"SRC": "from-env"},
    )
    assert values == {"A": "from-env", "B": "line1\nline2"}  # one final newline dropped


def test_prepare_names_the_reference_never_the_value(tmp_path: Path) -> None:
    spec = catalog_spec("c1", secrets={"DB": SecretRef("env", "DB_SRC")})
    with pytest.raises(LaunchFailed) as failed:
        prepare(spec, 18080, tmp_path, {"PATH": "/usr/bin:/bin"})
    assert "secret DB reads $DB_SRC" in failed.value.message
    launch = prepare(spec, 18080, tmp_path, {"PATH": "/usr/bin:/bin", "DB_SRC": "s3cret"})
    assert launch.env["DB"] == "s3cret" and "DB_SRC" not in launch.env
    assert (launch.secret_names, launch.secret_values) == (("DB",), ("s3cret",))
    assert "s3cret" not in repr(launch)
    assert launch.argv[0] == "/bin/sh"
    assert spec.artifact_dir == CATALOG
