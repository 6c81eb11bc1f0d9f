from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.runtime.local.environment import argv, child_environment

from .conftest import catalog_spec


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
