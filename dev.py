#!/usr/bin/env python3
"""Bootstrap for a fresh clone: `python3 dev.py demo` or `python3 dev.py test`.

Creates `.venv` with Conveyor and its test tools on first use (and again whenever
pyproject.toml changes), then runs the demo or the test suite inside it. Needs only
Python 3.11+; extra arguments after `test` go to pytest.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / "bin"
STAMP = VENV / ".conveyor-installed"


def ensure_venv() -> None:
    if sys.version_info < (3, 11):
        sys.exit(f"Conveyor needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == wanted and (BIN / "conveyor").exists():
        return
    if not (BIN / "python").exists():
        print("creating .venv …", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print("installing Conveyor and its test tools into .venv …", flush=True)
    pip = [str(BIN / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "-e", f"{ROOT}[dev]"], check=True)
    STAMP.write_text(wanted)


def accelerate() -> None:
    """Compile the router's hot path for the current sources when a C compiler is there
    (a no-op once built; docs/router.md "A compiled hot path"). Without one the router runs
    interpreted, a little slower: say so once, and carry on."""
    done = subprocess.run(
        [str(BIN / "python"), "-m", "conveyor.traffic.builtin.accelerate", "build", "--quiet"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        print((done.stderr or done.stdout).strip().splitlines()[0], flush=True)
    elif done.stdout.strip():
        print(done.stdout.strip(), flush=True)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("demo", "test", "check"):
        print(__doc__)
        return 2
    ensure_venv()
    accelerate()
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    command, rest = argv[0], argv[1:]
    if command == "demo":
        return subprocess.run([str(BIN / "conveyor"), "demo", *rest], env=env, cwd=ROOT).returncode
    if command == "check":
        checks = [
            [str(BIN / "ruff"), "check", "src", "tests", "bench", "examples"],
            [str(BIN / "mypy"), "src"],
            [str(BIN / "lint-imports")],
        ]
        for check in checks:
            print("$", " ".join(Path(check[0]).name if i == 0 else a for i, a in enumerate(check)), flush=True)
            code = subprocess.run(check, env=env, cwd=ROOT).returncode
            if code:
                return code
        return 0
    return subprocess.run([str(BIN / "python"), "-m", "pytest", *rest], env=env, cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
