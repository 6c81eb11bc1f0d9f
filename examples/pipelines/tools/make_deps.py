"""Stand-in for a dependency install: a package per requirement, "built" and byte-compiled.

Real installs are slow mostly because they build (compile native code) and unpack; this
burns comparable CPU per module (a key-derivation loop stands in for the compiler) without a
network, so the pipeline cache can be shown to matter. DEPS_SIZE sets the build work per
package (25 units per module file).
"""

import compileall
import hashlib
import os
import sys
from pathlib import Path

requirements, target = Path(sys.argv[1]), Path(sys.argv[2])
size = int(os.environ.get("DEPS_SIZE", "250"))  # units of build work per package
PER_MODULE = 25
names = [line.strip() for line in requirements.read_text().splitlines() if line.strip()]
for name in names:
    package = target / name
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text(f"NAME = {name!r}\n")
    for module in range(0, size, PER_MODULE):
        units = range(module, min(module + PER_MODULE, size))
        built = [hashlib.pbkdf2_hmac("sha256", name.encode(), b"%d" % i, 20_000) for i in units]
        (package / f"m{module}.py").write_text(f"BUILT = {[b.hex() for b in built]!r}\n")
    compileall.compile_dir(str(package), quiet=1)
(target / ".complete").write_text("\n".join(names) + "\n")
