"""Fixtures for the local runtime: a state dir that must be left with no process behind."""

from __future__ import annotations

import asyncio
import http.client
import os
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from conveyor.core.model import InstanceSpec, ProbeSpec, SecretRef
from conveyor.runtime.local import procfs

SHOP = Path(__file__).resolve().parents[2] / "examples" / "shop"
CATALOG = SHOP / "services" / "catalog"
PRICING = SHOP / "services" / "pricing"
FAST_READINESS = ProbeSpec("/health/ready", timeout=1.0, period=0.1)


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    """A fresh state dir; afterwards, no process tagged with it may still run."""
    directory = (tmp_path / "state").resolve()
    directory.mkdir()
    yield directory
    strays = procfs.scan_tagged(str(directory))
    for stray in strays:
        os.kill(stray.pid, signal.SIGKILL)
    assert not strays, f"instance processes left running after the test: {strays}"


def catalog_spec(
    instance_id: str,
    *,
    environment: Mapping[str, str] | None = None,
    command: str | tuple[str, ...] = "python3 app/server.py",
    readiness: ProbeSpec | None = FAST_READINESS,
    liveness: ProbeSpec | None = None,
    stop_grace: float = 5.0,
    env: str = "dev",
    artifact_dir: Path = CATALOG,
    secrets: Mapping[str, SecretRef] | None = None,
) -> InstanceSpec:
    return InstanceSpec(
        instance_id=instance_id,
        project="shop",
        service="catalog",
        env=env,
        version="v1",
        revision=1,
        artifact_digest="sha256:" + "0" * 64,
        artifact_dir=artifact_dir,
        command=command,
        environment={
            "CONVEYOR_VERSION": "1.0.0-test",
            "CONVEYOR_REVISION": "7",
            **(environment or {}),
        },
        readiness=readiness,
        liveness=liveness,
        stop_grace=stop_grace,
        secrets=dict(secrets or {}),
    )


async def eventually(
    predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition"
) -> None:
    """Wait for ``predicate`` to hold; the timeout is generous, it only bounds a failure."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


def get(port: int, path: str = "/", timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()
