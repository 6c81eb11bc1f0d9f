"""The router's hot path compiled with mypyc, used when a build for these exact sources exists.

Why: one router process spends about 3.4 µs of interpreter time per request above what the
socket work alone costs (docs/benchmarks.md), which left it at 1.14x the CPU per request of
single-threaded HAProxy. The same modules compiled by mypyc (the compiler black and mypy
ship themselves with) run that path at C speed with no change to the code, and the router
matches HAProxy. Compiling needs a C compiler and Python's headers, which a fresh machine
may lack, so the compiled modules are an accelerator, never a requirement: without a build
the router runs the very same modules interpreted.

How it stays honest:

* **Only a build of the current sources is ever loaded.** A build lives in a directory
  named by the digest of the compiled modules, of what they import from Conveyor, of the
  Python version and of mypyc's version (``digest``). Editing ``proxy.py`` changes the
  digest, so a stale build is never picked up; the router runs interpreted until someone
  builds again (``python -m conveyor.traffic.builtin.accelerate``, which ``dev.py`` runs).
* **Loading native code is running code: it is verified first.** The build directory must
  belong to this user and be writable by nobody else, and each shared object must match
  the SHA-256 recorded in ``manifest.json`` when it was built; anything else is refused
  with a warning and the interpreted modules are used.
* **Activation happens before the hot modules are imported**: ``traffic/builtin/__init__``
  calls ``activate(__path__)``, which puts the build's directory first on the package's
  path, so ``conveyor.traffic.builtin.proxy`` resolves to the compiled module.
  ``CONVEYOR_ROUTER_ACCEL=off`` keeps the interpreted modules (to compare, or to debug).

Builds go to ``$XDG_CACHE_HOME/conveyor/router-accel/<digest>`` (``~/.cache`` by default).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import stat
import sys
import sysconfig
from collections.abc import MutableSequence
from pathlib import Path

log = logging.getLogger("conveyor.router.accel")

COMPILED = ("outbox", "metrics", "table", "upstream", "wire", "proxy")
"""Modules of this package that mypyc compiles: everything a proxied request runs through."""

_DEPENDENCIES = (
    "conveyor/traffic/builtin/balancer.py",
    "conveyor/traffic/builtin/budget.py",
    "conveyor/traffic/builtin/limits.py",
    "conveyor/core/model.py",
    "conveyor/core/retry.py",
)
"""What the compiled modules import from Conveyor: compiled code trusts their types."""

SWITCH = "CONVEYOR_ROUTER_ACCEL"
MANIFEST = "manifest.json"
_SOURCE_ROOT = Path(__file__).resolve().parents[3]  # the directory holding ``conveyor/``

_active: Path | None = None


def sources(root: Path = _SOURCE_ROOT) -> list[Path]:
    """The files a build is made from (the compiled modules, then their dependencies)."""
    own = [root / "conveyor" / "traffic" / "builtin" / f"{name}.py" for name in COMPILED]
    return own + [root / relative for relative in _DEPENDENCIES]


def _mypyc_version() -> str:
    """mypy's version from its metadata (importing mypy itself costs ~10 ms per start)."""
    from importlib import metadata

    try:
        return metadata.version("mypy")
    except metadata.PackageNotFoundError:
        return "none"


def digest(root: Path = _SOURCE_ROOT, compiler: str | None = None) -> str:
    """The name of the build for these sources, this interpreter and this mypyc."""
    hasher = hashlib.sha256()
    hasher.update(sys.implementation.cache_tag.encode())
    hasher.update(str(sysconfig.get_config_var("EXT_SUFFIX")).encode())
    hasher.update((compiler if compiler is not None else _mypyc_version()).encode())
    for path in sources(root):
        hasher.update(path.relative_to(root).as_posix().encode() + b"\0")
        hasher.update(path.read_bytes() + b"\0")
    return hasher.hexdigest()[:32]


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "conveyor" / "router-accel"


def build_dir(root: Path = _SOURCE_ROOT) -> Path:
    return cache_root() / digest(root)


def active() -> Path | None:
    """The build this process runs, or None when the hot path is interpreted."""
    return _active


def activate(package_path: MutableSequence[str]) -> Path | None:
    """Use the build of the current sources, if there is a sound one (see module docstring).

    Never raises: whatever is wrong with a build, the interpreted modules still work.
    """
    global _active
    if _active is not None:
        return _active
    if os.environ.get(SWITCH, "").lower() in ("0", "off", "no", "false"):
        return None
    try:
        where = build_dir()
        if not where.is_dir():
            return None
        problem = _unsound(where)
    except Exception as exc:  # a corrupt manifest, an unreadable file: never break imports
        problem, where = f"cannot read the build: {exc}", cache_root()
    if problem is not None:
        log.warning("not loading the compiled router from %s: %s", where, problem)
        return None
    package_path.insert(0, str(where / "conveyor" / "traffic" / "builtin"))
    sys.path.append(str(where))  # mypyc's shared runtime module is imported by its own name
    _active = where
    return where


def _unsound(where: Path) -> str | None:
    """Why the build at ``where`` must not be loaded, or None if it may be."""
    directories = [where.parent, where, *(p for p in where.rglob("*") if p.is_dir())]
    for directory in directories:
        info = directory.stat()
        if info.st_uid != os.getuid():
            return f"{directory} belongs to another user"
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return f"{directory} is writable by others"
    manifest = json.loads((where / MANIFEST).read_text())
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        return "its manifest lists no files"
    suffix = str(sysconfig.get_config_var("EXT_SUFFIX"))
    wanted = {f"conveyor/traffic/builtin/{name}{suffix}" for name in COMPILED}
    if not wanted <= set(files):
        return "it lacks some of the compiled modules"
    for relative, expected in files.items():
        path = where / relative
        if path.resolve().parent != (where / relative).parent.resolve() or ".." in relative:
            return f"the manifest names a file outside the build: {relative}"
        if hashlib.sha256(path.read_bytes()).hexdigest() != expected:
            return f"{relative} does not match its recorded digest"
    return None


# --- building -------------------------------------------------------------------------

_BUILD = """
import sys
from setuptools import setup
from mypyc.build import mypycify
out, temp, *paths = sys.argv[1:]
setup(
    name="conveyor-router-accel",
    ext_modules=mypycify(paths, opt_level="3"),
    script_args=["build_ext", "--build-lib", out, "--build-temp", temp],
)
"""


def missing_toolchain() -> str | None:
    """What this machine lacks to compile the hot path, or None if nothing."""
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        return "no C compiler (install gcc, or your platform's build tools)"
    if not Path(sysconfig.get_paths()["include"], "Python.h").is_file():
        return "no Python headers (install python3-dev, or your Python's headers)"
    return None


class BuildFailed(Exception):
    """The compiler is missing or refused: the router stays interpreted."""


def build(root: Path = _SOURCE_ROOT, *, quiet: bool = True) -> Path:
    """Compile the hot path for the current sources (a no-op when that build exists).

    Built in a private temporary directory and moved into place whole, so a reader never
    sees half a build; the manifest records each shared object's SHA-256.
    """
    import subprocess
    import tempfile

    target = build_dir(root)
    if (target / MANIFEST).is_file():
        return target
    missing = missing_toolchain()
    if missing is not None:
        raise BuildFailed(missing)
    parent = cache_root()
    parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    parent.chmod(0o700)
    staging = Path(tempfile.mkdtemp(prefix=".build-", dir=parent))
    try:
        out = staging / "out"
        paths = [str(path.relative_to(root)) for path in sources(root)[: len(COMPILED)]]
        done = subprocess.run(
            [sys.executable, "-c", _BUILD, str(out), str(staging / "temp"), *paths],
            cwd=root,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            tail = (done.stdout + done.stderr).strip().splitlines()[-8:]
            raise BuildFailed("mypyc failed:\n" + "\n".join(tail))
        if not quiet:
            print(done.stdout[-2000:], end="")
        shared = sorted(p for p in out.rglob("*") if p.is_file())
        files = {
            p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in shared
        }
        (out / MANIFEST).write_text(json.dumps({"digest": target.name, "files": files}))
        out.chmod(0o700)
        with contextlib.suppress(FileExistsError, OSError):
            out.rename(target)  # another build of the same sources may have won: fine
        if not (target / MANIFEST).is_file():
            raise BuildFailed(f"the build could not be moved to {target}")
        return target
    finally:
        shutil.rmtree(staging, ignore_errors=True)
