"""What an instance is started with, and whether it can be started at all.

The environment is built, not inherited. An instance sees only a small base taken from the
server (enough for tools to be found and text to be decoded), then its configuration (its
secrets read now, at start), then the variables the runtime owns. ``VIRTUAL_ENV``,
``PYTHONPATH`` and ``PYTHONHOME`` are NOT passed on, deliberately: a service must behave the
same whichever way the Conveyor server was started, and a service that imported Conveyor's
own packages by accident would work on a laptop and break in production. A service that
needs them sets them in its config.

An instance with ``run_as`` is started as that user (``conveyor.run_as``), and the variables
that say who a process is — ``HOME``, ``USER``, ``LOGNAME`` — are that user's instead of the
server's: HOME is the account's home directory if it owns one, else ``/`` (a system account
made with ``--no-create-home`` has none; root's HOME is not readable to it). Config may still
set HOME, as any service variable.

The runtime's variables come last so configuration cannot forge an instance's identity:
the port, ``CONVEYOR_INSTANCE_ID``, ``CONVEYOR_PROJECT`` and ``CONVEYOR_STATE_DIR`` (the tag
that lets a restarted server find the instance again, see ``procfs``).

``prepare`` is the one gate before a spawn: everything that would make the spawn itself
fail, or start a process that can never work, is found here and reported as
``LaunchFailed`` naming the instance, the cause and the fix — an environment the kernel
cannot hold (a name with ``=``, a NUL), a secret that cannot be read (named by its
reference, never its value), a working directory that is gone or unreadable, a program
that is not there — and for ``run_as``: a user this host does not have, a server that is not
root and so cannot switch to it, a tree or a program that user cannot reach (checked from
the mode bits along the path, as that user, not with root's ``os.access``). The spawn that
follows can then only fail for reasons nobody could have checked (a race), and those are
reported the same way.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from conveyor.core.model import InstanceSpec, SecretRef
from conveyor.errors import LaunchFailed
from conveyor.layout import open_passage
from conveyor.run_as import (
    CREATE_HINT,
    SEARCH,
    UnknownUser,
    User,
    barrier,
    current,
    home_of,
    login_environment,
    lookup,
    needs_switch,
    switch_problem,
)
from conveyor.runtime.local.procfs import INSTANCE_VAR, STATE_DIR_VAR

INHERITED = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR")
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
SHELL = "/bin/sh"


@dataclass(frozen=True)
class Launch:
    """A spawn that passed every check: argv, environment, the values to mask in logs, and
    the user to start it as (None: the server's own, nothing to switch)."""

    argv: tuple[str, ...]
    env: Mapping[str, str] = field(repr=False)  # holds the secrets' values: never printed
    secret_names: tuple[str, ...] = ()
    secret_values: tuple[str, ...] = field(default=(), repr=False)
    user: User | None = None


def argv(command: str | tuple[str, ...]) -> list[str]:
    """A string is a shell command line; a tuple is exec'd as is, with no shell between."""
    if isinstance(command, str):
        return [SHELL, "-c", command]
    if not command:
        raise ValueError("an instance command must not be empty")
    return list(command)


def child_environment(
    spec: InstanceSpec,
    port: int,
    state_dir: Path,
    base: Mapping[str, str],
    secrets: Mapping[str, str] | None = None,
    login: Mapping[str, str] | None = None,
) -> dict[str, str]:
    env = {name: base[name] for name in INHERITED if name in base}
    env.update(login or {})
    env.setdefault("PATH", DEFAULT_PATH)
    env["PYTHONUNBUFFERED"] = "1"  # print() in a service reaches its log at once
    # The artifact tree is read-only (layout.read_only_mode); root could still write
    # bytecode caches into it, which would change the tree served under the digest.
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(spec.environment)
    env.update(secrets or {})
    env[spec.port_env] = str(port)
    env[INSTANCE_VAR] = spec.instance_id
    env["CONVEYOR_PROJECT"] = spec.project
    env[STATE_DIR_VAR] = str(state_dir)
    return env


def environment_problem(env: Mapping[str, str]) -> str | None:
    """Why ``env`` cannot be a process environment, or None.

    The kernel takes ``NAME=VALUE`` strings ending in NUL: a name with ``=`` would be read
    back as another name, a NUL anywhere would cut the entry short (Python refuses both).
    """
    for name, value in env.items():
        if not name or "=" in name or "\0" in name:
            return f"config key {name!r} is not usable as an environment variable name"
        if "\0" in value:
            return f"the value of {name} contains a NUL character"
    return None


def read_secrets(secrets: Mapping[str, SecretRef], server_env: Mapping[str, str]) -> dict[str, str]:
    """Each secret's value, read now; LaunchFailed's text names the reference, not a value."""
    values: dict[str, str] = {}
    for name, ref in secrets.items():
        if ref.source == "env":
            if ref.name not in server_env:
                raise _Unusable(
                    f"secret {name} reads ${ref.name} from the server's environment, "
                    "which is not set",
                    f"export {ref.name} where `conveyor server` (or `conveyor up`) starts, "
                    "then deploy or retry",
                )
            values[name] = server_env[ref.name]
            continue
        try:
            values[name] = Path(ref.name).read_text(encoding="utf-8").removesuffix("\n")
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise _Unusable(
                f"secret {name} reads the file {ref.name}: {why}",
                f"create {ref.name}, readable by the server's user, or point the secret "
                "elsewhere in conveyor.yaml",
            ) from None
    return values


def find_program(name: str, path: str, cwd: Path, user: User | None = None) -> Path | None:
    """Where exec would find ``name`` (with PATH from the child's environment, from ``cwd``),
    as ``user`` would (None: as this process)."""
    if "/" in name:
        candidates = [cwd / name]
    else:
        candidates = [cwd / (directory or ".") / name for directory in path.split(os.pathsep)]
    for candidate in candidates:
        if not candidate.is_file():
            continue
        if user is None and os.access(candidate, os.X_OK):
            return candidate
        if user is not None and barrier(candidate, user, SEARCH) is None:
            return candidate
    return None


def run_as_user(spec: InstanceSpec, server: User) -> User | None:
    """The user to start ``spec`` as, None when that is the server's own (nothing to switch)."""
    if spec.run_as is None:
        return None
    field = f"services.{spec.service}.run_as (or the project's run_as) in conveyor.yaml"
    kept = "a release keeps the user it was made with"
    try:
        user = lookup(spec.run_as)
    except UnknownUser as exc:
        raise _Unusable(
            f"it runs as {spec.run_as!r}, but {exc.message}",
            f"create it on this host ({CREATE_HINT}); or name an existing user in {field} "
            f"and deploy again ({kept})",
        ) from None
    problem = switch_problem(user, server)
    if problem is not None:
        raise _Unusable(
            f"the server cannot start it as {spec.run_as!r}: {problem}",
            f"start the server as root; or remove {field} and deploy again ({kept})",
        )
    return user if needs_switch(user, server) else None


def prepare(
    spec: InstanceSpec,
    port: int,
    state_dir: Path,
    base: Mapping[str, str],
    server: User | None = None,
) -> Launch:
    """Everything a spawn of ``spec`` needs, checked; LaunchFailed says what is wrong.

    ``server`` is who the runtime runs as (default: this process's user).
    """
    try:
        return _prepare(spec, port, state_dir, base, server or current())
    except _Unusable as exc:
        raise LaunchFailed(
            f"cannot start {spec.service} instance {spec.instance_id}: {exc.args[0]}",
            hint=exc.args[1],
        ) from None


def _prepare(
    spec: InstanceSpec,
    port: int,
    state_dir: Path,
    base: Mapping[str, str],
    server: User,
) -> Launch:
    user = run_as_user(spec, server)
    problem = environment_problem(spec.environment)
    if problem is not None:
        raise _Unusable(
            problem,
            "environment variable names are letters, digits and '_', and no value holds "
            "NUL; fix the config of this release (conveyor.yaml, or the --set that made it) "
            "and deploy again",
        )
    values = read_secrets(spec.secrets, base)
    problem = environment_problem(values)
    if problem is not None:
        raise _Unusable(problem, "store the secret without NUL characters")
    login = None if user is None else login_environment(user, home_of(user))
    env = child_environment(spec, port, state_dir, base, values, login)
    directory = spec.artifact_dir
    if not directory.is_dir():
        raise _Unusable(
            f"artifact directory {directory} does not exist",
            "unpack the artifact before launching (or rebuild it if it was deleted)",
        )
    if not os.access(directory, os.R_OK | os.X_OK):
        raise _Unusable(
            f"artifact directory {directory} is not readable by the server's user",
            f"give the server's user read access to {directory}, or delete it so the "
            "artifact is unpacked again",
        )
    if user is not None:
        open_passage(directory)  # .conveyor/ and unpacked/ searchable: the way to the tree
        blocked = barrier(directory, user)
        if blocked is not None:
            raise _Unusable(
                f"user {user.name} cannot read its artifact directory {directory}: {blocked}",
                "let other users search (not read) every directory above the project, e.g. "
                "chmod o+x on it, or keep the project where they can; Conveyor opens the "
                "ones under .conveyor/ itself",
            )
    command = argv(spec.command)
    if find_program(command[0], env.get("PATH", ""), directory, user) is None:
        where = f"in {directory}" if "/" in command[0] else f"on PATH ({env.get('PATH', '')})"
        who = "" if user is None else f" that user {user.name} may run"
        raise _Unusable(
            f"program {command[0]!r} is not an executable file{who} {where}",
            f"check the `run:` command of service {spec.service!r} in conveyor.yaml, or set "
            "PATH in its config",
        )
    return Launch(tuple(command), env, tuple(sorted(values)), tuple(values.values()), user)


class _Unusable(Exception):
    """Internal: (what is wrong, how to fix it), before the instance is named."""


Unusable = _Unusable
"""(what is wrong, how to fix it) for callers that start something other than an instance
(a release's migration) and name it themselves."""
