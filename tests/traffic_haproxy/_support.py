"""A real HAProxy router for the tests, plus the pieces they share.

Backends, the raw keep-alive client and the loop runner are the built-in router tests'
(``tests/traffic/_support.py``): both routers are held to the same real backends.
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from conveyor.traffic.haproxy import HAProxyRouter
from tests.traffic._support import ENV, SERVICE, RawClient

HAPROXY = Path("/usr/sbin/haproxy")

needs_haproxy = pytest.mark.skipif(
    not HAPROXY.exists(), reason="HAProxy is not installed: apt-get install haproxy"
)


@contextlib.asynccontextmanager
async def haproxy_routed(
    state_dir: Path, preview: bool = False, **options: Any
) -> AsyncIterator[tuple[HAProxyRouter, int]]:
    """A router serving ``SERVICE``/``ENV`` on a free port; closed (and checked) afterwards."""
    router = HAProxyRouter(state_dir, haproxy=str(HAPROXY), **options)
    try:
        await router.serve(SERVICE, ENV, "127.0.0.1", 0, 0 if preview else None)
        yield router, router.bound_port(SERVICE, ENV)
    finally:
        pids = [p for p in (router.master_pid, router.worker_pid) if p]
        await router.close()
        assert not [pid for pid in pids if running(pid)], "HAProxy processes left behind"


def running(pid: int) -> bool:
    """Whether a process runs (zombies waiting for a reaper do not count)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def haproxy_processes(marker: str) -> list[int]:
    """Live HAProxy processes whose command line mentions ``marker`` (a state dir)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "haproxy" in cmdline and marker in cmdline and running(int(entry.name)):
            found.append(int(entry.name))
    return [pid for pid in found if pid != os.getpid()]


async def split(port: int, requests: int) -> Counter[str]:
    """Which version answered each of ``requests`` sequential keep-alive requests."""
    seen: Counter[str] = Counter()
    client = await RawClient.connect(port)
    try:
        for _ in range(requests):
            response = await client.request()
            assert response.status == 200, response
            seen[response.headers[b"x-version"].decode()] += 1
    finally:
        await client.close()
    return seen


__all__ = ["ENV", "SERVICE", "haproxy_processes", "haproxy_routed", "needs_haproxy", "split"]
