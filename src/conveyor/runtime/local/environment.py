"""What an instance is started with: its argv and its environment.

The environment is built, not inherited. An instance sees only a small base taken from the
server (enough for tools to be found and text to be decoded), then its configuration, then
the variables the runtime owns. ``VIRTUAL_ENV``, ``PYTHONPATH`` and ``PYTHONHOME`` are NOT
passed on, deliberately: a service must behave the same whichever way the Conveyor server
was started, and a service that imported Conveyor's own packages by accident would work
on a laptop and break in production. A service that needs them sets them in its config.

The runtime's variables come last so configuration cannot forge an instance's identity:
the port, ``CONVEYOR_INSTANCE_ID``, ``CONVEYOR_PROJECT`` and ``CONVEYOR_STATE_DIR`` (the tag
that lets a restarted server find the instance again, see ``procfs``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from conveyor.core.model import InstanceSpec
from conveyor.runtime.local.procfs import INSTANCE_VAR, STATE_DIR_VAR

INHERITED = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR")
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


def argv(command: str | tuple[str, ...]) -> list[str]:
    """A string is a shell command line; a tuple is exec'd as is, with no shell between."""
    if isinstance(command, str):
        return ["/bin/sh", "-c", command]
    if not command:
        raise ValueError("an instance command must not be empty")
    return list(command)


def child_environment(
    spec: InstanceSpec, port: int, state_dir: Path, base: Mapping[str, str]
) -> dict[str, str]:
    env = {name: base[name] for name in INHERITED if name in base}
    env.setdefault("PATH", DEFAULT_PATH)
    env["PYTHONUNBUFFERED"] = "1"  # print() in a service reaches its log at once
    env.update(spec.environment)
    env[spec.port_env] = str(port)
    env[INSTANCE_VAR] = spec.instance_id
    env["CONVEYOR_PROJECT"] = spec.project
    env[STATE_DIR_VAR] = str(state_dir)
    return env
