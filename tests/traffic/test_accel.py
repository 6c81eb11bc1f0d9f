"""The compiled hot path (traffic/builtin/accel.py): only a sound build of the current
sources is ever loaded, a real mypyc build serves requests, and without one the router runs
the same modules interpreted."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from conveyor.traffic.builtin import accel

SRC = Path(accel.__file__).resolve().parents[3]
SUFFIX = str(sysconfig.get_config_var("EXT_SUFFIX"))


def _copy_sources(root: Path) -> Path:
    for path in accel.sources(SRC):
        target = root / path.relative_to(SRC)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    return root


def test_the_digest_names_exactly_the_sources_it_was_made_from(tmp_path: Path) -> None:
    root = _copy_sources(tmp_path / "src")
    first = accel.digest(root, compiler="1.0")
    assert accel.digest(root, compiler="1.0") == first
    assert accel.digest(root, compiler="2.0") != first  # another mypyc, another build
    proxy = root / "conveyor/traffic/builtin/proxy.py"
    proxy.write_text(proxy.read_text() + "\n# edited\n")
    edited = accel.digest(root, compiler="1.0")
    assert edited != first  # an edit to a compiled module: the old build is never used
    model = root / "conveyor/core/model.py"
    model.write_text(model.read_text() + "\n# edited\n")
    assert accel.digest(root, compiler="1.0") not in (first, edited)  # a dependency, too


def _fake_build(where: Path) -> None:
    """A build's shape (not loadable code): every compiled module and a manifest."""
    files = {}
    for name in (*accel.COMPILED, "extra"):
        relative = f"conveyor/traffic/builtin/{name}{SUFFIX}"
        path = where / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(name.encode())
        files[relative] = hashlib.sha256(name.encode()).hexdigest()
    (where / accel.MANIFEST).write_text(json.dumps({"files": files}))
    for directory in (where.parent, where, *(p for p in where.rglob("*") if p.is_dir())):
        directory.chmod(0o700)


def test_only_a_sound_build_may_be_loaded(tmp_path: Path) -> None:
    where = tmp_path / "cache" / "digest"
    _fake_build(where)
    assert accel._unsound(where) is None
    tampered = where / f"conveyor/traffic/builtin/proxy{SUFFIX}"
    tampered.write_bytes(b"something else")
    assert "does not match its recorded digest" in str(accel._unsound(where))
    tampered.write_bytes(b"proxy")
    (where / "conveyor").chmod(0o777)
    assert "writable by others" in str(accel._unsound(where))
    (where / "conveyor").chmod(0o700)
    manifest = json.loads((where / accel.MANIFEST).read_text())
    del manifest["files"][f"conveyor/traffic/builtin/wire{SUFFIX}"]
    (where / accel.MANIFEST).write_text(json.dumps(manifest))
    assert "lacks some of the compiled modules" in str(accel._unsound(where))


def test_activation_puts_a_sound_build_first_and_refuses_a_tampered_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(accel, "_active", None)
    monkeypatch.setattr(sys, "path", list(sys.path))
    where = accel.build_dir()
    _fake_build(where)
    tampered = where / f"conveyor/traffic/builtin/table{SUFFIX}"
    tampered.write_bytes(b"not what was built")
    package_path = ["/the/sources"]
    assert accel.activate(package_path) is None
    assert package_path == ["/the/sources"]  # nothing unverified reaches the import path
    tampered.write_bytes(b"table")
    manifest = (where / accel.MANIFEST).read_text()
    (where / accel.MANIFEST).write_text("{not json")
    assert accel.activate(package_path) is None  # a corrupt manifest: interpreted, no error
    (where / accel.MANIFEST).write_text(manifest)
    monkeypatch.setenv(accel.SWITCH, "off")
    assert accel.activate(package_path) is None  # switched off: interpreted
    monkeypatch.delenv(accel.SWITCH)
    assert accel.activate(package_path) == where
    assert package_path[0] == str(where / "conveyor" / "traffic" / "builtin")


_PROBE = """
import asyncio, json, sys
import conveyor.traffic.builtin.proxy as proxy
from conveyor.core.model import Backend, Pool, RouteTable
from conveyor.traffic.builtin import BuiltinRouter, accel

async def main():
    async def backend(reader, writer):
        await reader.readuntil(b"\\r\\n\\r\\n")
        writer.write(b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\nok")
        await writer.drain()
        writer.close()
    server = await asyncio.start_server(backend, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    router = BuiltinRouter()
    router.apply("s", "e", RouteTable((Pool("v1", 100, (Backend("a", "127.0.0.1", port),)),)))
    await router.serve("s", "e", "127.0.0.1", 0, None)
    reader, writer = await asyncio.open_connection("127.0.0.1", router.bound_port("s", "e"))
    writer.write(b"GET / HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n")
    answer = await reader.read()
    await router.close()
    print(json.dumps({"file": proxy.__file__, "active": str(accel.active()),
                      "answer": answer.decode(errors="replace")}))

asyncio.run(main())
"""


def _probe(env: dict[str, str]) -> dict[str, str]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.mark.integration
def test_a_real_build_serves_requests_and_switching_it_off_serves_the_same(
    tmp_path: Path,
) -> None:
    missing = accel.missing_toolchain()
    if missing is not None:
        pytest.skip(f"{missing}: the router runs interpreted on this machine")
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    env.pop(accel.SWITCH, None)
    built = subprocess.run(
        [sys.executable, "-m", "conveyor.traffic.builtin.accelerate", "build"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr
    compiled = _probe(env)
    assert compiled["file"].endswith(SUFFIX), compiled
    assert compiled["file"].startswith(str(tmp_path))
    assert compiled["answer"].startswith("HTTP/1.1 200") and compiled["answer"].endswith("ok")
    interpreted = _probe({**env, accel.SWITCH: "off"})
    assert interpreted["file"].endswith("proxy.py") and interpreted["active"] == "None"
    assert interpreted["answer"] == compiled["answer"]
