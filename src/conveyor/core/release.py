"""Identity of what runs: the template key and the config version.

A *template* is everything that makes two instances interchangeable: the artifact's bytes, the
config injected into it, and how it is started. Instances are grouped by template, not by
release, for the same reason Kubernetes keys ReplicaSets by pod-template-hash: a rollback to a
release whose instances are still warm finds them under the same key and becomes a traffic
switch instead of a cold start. Instance counts are not part of it; scaling is not a new version.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Collection, Iterable, Mapping, Sequence

from conveyor.core.model import SecretRef
from conveyor.errors import UsageError

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _canonical(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _config_json(config: Mapping[str, str], secrets: Mapping[str, SecretRef]) -> dict[str, object]:
    """Config as identity: literal values, and secrets by their reference, never their value.

    A secret's value is not part of what makes two instances interchangeable, exactly as a
    Kubernetes Deployment does not roll when a Secret it reads changes: the value is not in
    the release (it is read when an instance starts), so it cannot be in the key either, and
    rotating a password must not look like a new version. Pointing a key at another secret
    *is* a change of config and gets a new key. Without secrets the payload is what it was
    before references existed, so stored keys stay valid.
    """
    payload: dict[str, object] = dict(config)
    if secrets:
        payload = {"values": payload, "secrets": {k: r.to_json() for k, r in secrets.items()}}
    return payload


def config_version(
    config: Mapping[str, str], secrets: Mapping[str, SecretRef] | None = None
) -> str:
    """Short, stable hash of a release's config, shown in `status` and diffed in `history`."""
    return "c" + hashlib.sha256(_canonical(_config_json(config, secrets or {}))).hexdigest()[:10]


def template_key(
    artifact_digest: str,
    config: Mapping[str, str],
    command: str | Sequence[str],
    port_env: str,
    secrets: Mapping[str, SecretRef] | None = None,
    run_as: str | None = None,
) -> str:
    """The key of a template; see the module docstring.

    ``run_as`` is part of it: instances running as root and instances running as an
    unprivileged user are not interchangeable (a release that only adds ``run_as`` must
    replace the running instances, not find them "already there"). It enters the payload
    only when set, so the keys of releases without it are what they always were.
    """
    payload: dict[str, object] = {
        "artifact": artifact_digest,
        "config": _config_json(config, secrets or {}),
        "command": command if isinstance(command, str) else list(command),
        "port_env": port_env,
    }
    if run_as is not None:
        payload["run_as"] = run_as
    return "t" + hashlib.sha256(_canonical(payload)).hexdigest()[:10]


def merge_config(*layers: Mapping[str, str]) -> dict[str, str]:
    """Later layers win key by key: service defaults < environment overrides < `--set`."""
    merged: dict[str, str] = {}
    for layer in layers:
        merged.update(layer)
    return merged


# --- who may set what ------------------------------------------------------------------

PROTECTED_PREFIXES: tuple[tuple[str, str], ...] = (
    ("LD_", "the dynamic loader: LD_PRELOAD, LD_LIBRARY_PATH, LD_AUDIT load code into the process"),
    ("DYLD_", "the macOS dynamic loader: DYLD_INSERT_LIBRARIES loads code into the process"),
    (
        "PYTHON",
        "the Python interpreter: PYTHONPATH, PYTHONHOME, PYTHONSTARTUP, "
        "PYTHONBREAKPOINT, PYTHONWARNINGS choose or import code",
    ),
    ("MALLOC_", "the C library's allocator: MALLOC_TRACE writes a file of the caller's choosing"),
    ("GIT_", "git: GIT_SSH_COMMAND, GIT_EXEC_PATH and GIT_CONFIG_* run programs"),
    ("XDG_", "where programs look for their configuration (git reads XDG_CONFIG_HOME/git/config)"),
    ("BASH_FUNC_", "exported shell functions, which every bash child defines"),
)
"""Families of names that decide what code a process runs, rather than what it is told."""

PROTECTED_NAMES: dict[str, str] = {
    # where programs are found and what a shell runs before or instead of the command
    "PATH": "the program search path: it decides which `python` or `sh` runs",
    "SHELL": "the shell programs start on your behalf",
    "ENV": "the file an interactive sh runs at start (sudo removes it too)",
    "BASH_ENV": "the file bash runs at start, even for `sh -c`-style commands",
    "IFS": "how the shell splits words",
    "CDPATH": "where the shell's cd looks",
    "SHELLOPTS": "shell options (xtrace with PS4 runs code)",
    "BASHOPTS": "shell options",
    "PS4": "the shell's trace prompt, expanded (and so run) with xtrace",
    "GLOBIGNORE": "how the shell expands globs",
    "PROMPT_COMMAND": "a command the shell runs before each prompt",
    "ZDOTDIR": "where zsh reads its start files",
    # interpreters and runtimes: a flag or a path that loads code at start
    "NODE_OPTIONS": "Node.js flags (--require loads code)",
    "NODE_PATH": "where Node.js finds modules",
    "PERL5LIB": "where Perl finds modules",
    "PERLLIB": "where Perl finds modules",
    "PERL5OPT": "Perl flags (-M loads a module)",
    "PERL5DB": "the Perl debugger's code",
    "RUBYOPT": "Ruby flags (-r loads code)",
    "RUBYLIB": "where Ruby finds libraries",
    "GEM_HOME": "where RubyGems loads gems from",
    "GEM_PATH": "where RubyGems loads gems from",
    "JAVA_TOOL_OPTIONS": "JVM flags (-javaagent loads code)",
    "_JAVA_OPTIONS": "JVM flags (-javaagent loads code)",
    "JDK_JAVA_OPTIONS": "JVM flags (-javaagent loads code)",
    "CLASSPATH": "where the JVM finds classes",
    "DOTNET_STARTUP_HOOKS": "assemblies .NET loads at start",
    "PHPRC": "the php.ini PHP reads (auto_prepend_file runs code)",
    "PHP_INI_SCAN_DIR": "extra php.ini files PHP reads",
    "LUA_INIT": "code Lua runs at start",
    "LUA_PATH": "where Lua finds modules",
    "LUA_CPATH": "where Lua finds native modules",
    "TCLLIBPATH": "where Tcl finds packages",
    # the C library: glibc drops these for setuid programs (UNSECURE_ENVVARS) because they
    # make it load or read files of the caller's choosing
    "GCONV_PATH": "where iconv loads converter modules (shared objects)",
    "GETCONF_DIR": "where getconf finds its programs",
    "GLIBC_TUNABLES": "C library tunables (CVE-2023-4911)",
    "HOSTALIASES": "host name aliases the resolver reads",
    "LOCALDOMAIN": "the resolver's search domains",
    "RES_OPTIONS": "resolver options",
    "RESOLV_HOST_CONF": "the resolver's host.conf",
    "LOCPATH": "where locale data is read from",
    "NLSPATH": "where message catalogs are read from",
    "NIS_PATH": "NIS+ lookups",
    "TZDIR": "where time zone files are read from",
    "TMPDIR": "where temporary files go (glibc drops it for setuid programs)",
    # home: Python runs the .pth files of ~/.local/lib/pythonX.Y/site-packages at start,
    # and git, ssh, pip and most tools read their configuration from dotfiles there
    "HOME": "the home directory: user site-packages (.pth files run code) and dotfiles",
    # programs a process runs on its behalf
    "BROWSER": "the program webbrowser and xdg-open run",
    "EDITOR": "the editor programs start",
    "VISUAL": "the editor programs start",
    "PAGER": "the pager programs start",
    "LESSOPEN": "a command less runs on each file",
    "LESSCLOSE": "a command less runs on each file",
    "SSH_ASKPASS": "a program ssh runs to ask for a password",
    "SUDO_ASKPASS": "a program sudo runs to ask for a password",
}
"""Single names outside the families above, with why each is protected."""


def protected_reason(name: str) -> str | None:
    """Why a config variable may not be set through the API, or None when it may.

    The rule: a value that arrives with a request (``--set``, a deploy job's ``set:``) may
    change what a service is *told*, not what *runs*. Names that choose the program, the
    interpreter, the libraries loaded into it or code it runs at start belong to conveyor.yaml,
    which is reviewed like code (a service that needs PYTHONPATH sets it there), or to an
    environment's ``allow_set:``. It is the line ``sudo``'s env_reset and glibc's setuid
    filter draw for the same reason: whoever sets these runs code as the process's user.
    Case is ignored (``Path`` is refused like ``PATH``): refusing a harmless spelling costs a
    line in ``allow_set``, accepting a dangerous one on a case-insensitive system costs more.
    """
    upper = name.upper()
    if upper in PROTECTED_NAMES:
        return PROTECTED_NAMES[upper]
    for prefix, reason in PROTECTED_PREFIXES:
        if upper.startswith(prefix):
            return reason
    return None


def refused_overrides(names: Iterable[str], allowed: Collection[str]) -> dict[str, str]:
    """The override names the API must refuse (name -> why), in name order.

    ``allowed`` is what an administrator opened for one environment (``allow_set:``); it is
    matched exactly, so allowing ``PYTHONPATH`` does not allow ``PYTHONSTARTUP``.
    """
    refused = {}
    for name in sorted(set(names)):
        reason = protected_reason(name)
        if reason is not None and name not in allowed:
            refused[name] = reason
    return refused


def validate_overrides(overrides: Mapping[str, object]) -> dict[str, str]:
    """Config set for one release (``--set``, a deploy job): names that are environment
    variable names, values that are text without NUL. Checked by the server, whoever calls."""
    result: dict[str, str] = {}
    for key, value in overrides.items():
        if not isinstance(key, str) or not _ENV_NAME.fullmatch(key):
            raise UsageError(
                f"config key {key!r} is not a valid environment variable name "
                "(letters, digits and _, not starting with a digit)",
                hint="for example --set GREETING=hello",
            )
        if not isinstance(value, str) or "\x00" in value:
            raise UsageError(
                f"config value of {key} must be text without NUL characters",
                hint="pass it as a string, e.g. --set {key}=value",
            )
        result[key] = value
    return result


def parse_assignments(pairs: Sequence[str]) -> dict[str, str]:
    """Parse `--set KEY=VALUE` pairs; raises ValueError naming the bad pair."""
    result: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--set expects KEY=VALUE, got {pair!r}")
        if not _ENV_NAME.fullmatch(key):
            raise ValueError(
                f"--set key {key!r} is not a valid environment variable name "
                "(letters, digits and _, not starting with a digit)"
            )
        result[key] = value
    return result
