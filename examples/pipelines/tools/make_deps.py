"""Stand-in for a dependency install: a package per requirement, "built" and byte-compiled.

Real installs are slow mostly because they build (compile native code) and unpack; this
burns comparable CPU per module (a key-derivation loop stands in for the compiler) without a
network, so the pipeline cache can be shown to matter. DEPS_SIZE sets modules per package.
"""

import compileall
import hashlib
import os
import sys
from pathlib import Path

requirements, target = Path(sys.argv[1]), Path(sys.argv[2])
size = int(os.environ.get("DEPS_SIZE", "250"))
names = [line.strip() for line in requirements.read_text().splitlines() if line.strip()]
for name in names:
    package = target / name
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text(f"NAME = {name!r}\n")
    for index in range(size):
        built = hashlib.pbkdf2_hmac("sha256", name.encode(), str(index).encode(), 20_000)
        (package / f"m{index}.py").write_text(f"BUILT = {built.hex()!r}\n")
    compileall.compile_dir(str(package), quiet=1)
(target / ".complete").write_text("\n".join(names) + "\n")
