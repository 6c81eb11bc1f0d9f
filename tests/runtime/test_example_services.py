"""The example services of examples/shop, run directly as processes (no runtime involved)."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest

from .conftest import CATALOG, PRICING, get

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, child: subprocess.Popen[bytes], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert child.poll() is None, f"service exited with {child.returncode}"
            assert time.monotonic() < deadline, "service did not listen in time"
            time.sleep(0.02)


@contextmanager
def service(
    directory: Path, env: Mapping[str, str] | None = None, *, wait: bool = True
) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    port = free_port()
    child = subprocess.Popen(
        ["python3", "app/server.py"],
        cwd=directory,
        env={"PATH": os.environ["PATH"], "PORT": str(port), **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        if wait:
            wait_listening(port, child)
        yield port, child
    finally:
        if child.poll() is None:
            child.kill()
        child.communicate()


def test_shared_files_are_identical_in_every_service() -> None:
    for name in ("faults.py", "serving.py"):
        assert (CATALOG / "app" / name).read_bytes() == (PRICING / "app" / name).read_bytes()


def test_catalog_answers_with_version_headers_over_keep_alive() -> None:
    env = {
        "CONVEYOR_VERSION": "2.0.0",
        "CONVEYOR_REVISION": "12",
        "GREETING": "hej",
        "CONVEYOR_INSTANCE_ID": "cat-1",
    }
    with service(CATALOG, env) as (port, _):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            sockets = set()
            for _ in range(3):
                connection.request("GET", "/")
                response = connection.getresponse()
                body = response.read()
                sockets.add(id(connection.sock))
                assert response.status == 200
                assert response.getheader("X-Conveyor-Version") == "2.0.0"
                assert response.getheader("X-Conveyor-Revision") == "12"
                assert response.getheader("Content-Length") == str(len(body))
            assert len(sockets) == 1  # one connection served all three
        finally:
            connection.close()
        data = json.loads(body)
        assert data["greeting"] == "hej" and data["instance"] == "cat-1"
        assert {item["id"] for item in data["items"]} >= {"kettle", "mug"}
        assert get(port, "/health/live")[0] == 200
        assert get(port, "/health/ready")[:1] == (200,)
        assert get(port, "/nope")[0] == 404


def test_version_falls_back_to_the_version_file() -> None:
    with service(CATALOG) as (port, _):
        _, headers, _ = get(port)
    assert headers["x-conveyor-version"] == (CATALOG / "VERSION").read_text().strip()
    assert headers["x-conveyor-revision"] == "0"


def test_pricing_prices_items() -> None:
    with service(PRICING, {"CURRENCY": "SEK"}) as (port, _):
        status, _, body = get(port, "/?item=mug")
        assert status == 200 and json.loads(body)["price"] == 7.9
        assert json.loads(body)["currency"] == "SEK"
        assert get(port, "/?item=unicorn")[0] == 404
        assert set(json.loads(get(port, "/")[2])["prices"]) >= {"mug", "kettle"}


@pytest.mark.parametrize(("rate", "every"), [(0.25, 4), (0.5, 2), (1.0, 1)])
def test_error_rate_fault_is_exact_and_deterministic(rate: float, every: int) -> None:
    with service(CATALOG, {"FAULT_ERROR_RATE": str(rate)}) as (port, _):
        statuses = [get(port)[0] for _ in range(40)]
        assert get(port, "/health/ready")[0] == 200  # probes are not counted
    failed = [i + 1 for i, s in enumerate(statuses) if s == 500]
    assert failed == list(range(every, 41, every))
    assert set(statuses) <= {200, 500}


def test_readiness_fault_fails_readiness_but_not_liveness() -> None:
    with service(PRICING, {"FAULT_READINESS": "fail"}) as (port, _):
        status, _, body = get(port, "/health/ready")
        assert status == 503 and "FAULT_READINESS" in json.loads(body)["reason"]
        assert get(port, "/health/live")[0] == 200
        assert get(port, "/?item=mug")[0] == 200


def test_latency_fault_delays_requests() -> None:
    with service(CATALOG, {"FAULT_LATENCY_MS": "300"}) as (port, _):
        began = time.monotonic()
        assert get(port)[0] == 200
        assert time.monotonic() - began >= 0.3
        began = time.monotonic()
        assert get(port, "/health/live")[0] == 200
        assert time.monotonic() - began < 0.3  # probes are not slowed


def test_crash_fault_exits_with_code_3() -> None:
    with service(CATALOG, {"FAULT_CRASH_AFTER": "0.3"}) as (_, child):
        assert child.wait(timeout=10) == 3
        assert b"crashing after 0.3s" in child.communicate()[0]


def test_startup_delay_fault_delays_listening() -> None:
    with service(PRICING, {"FAULT_STARTUP_DELAY": "0.6"}, wait=False) as (port, child):
        began = time.monotonic()
        wait_listening(port, child)
        assert time.monotonic() - began >= 0.5


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FAULT_ERROR_RATE", "lots"),
        ("FAULT_ERROR_RATE", "1.5"),
        ("FAULT_READINESS", "maybe"),
        ("FAULT_LATENCY_MS", "-5"),
    ],
)
def test_invalid_fault_settings_stop_the_service_with_a_message(name: str, value: str) -> None:
    with service(CATALOG, {name: value}, wait=False) as (_, child):
        assert child.wait(timeout=10) == 2
        assert f"invalid {name}=".encode() in child.communicate()[1]


def test_sigterm_drains_in_flight_requests_and_exits_0() -> None:
    with service(CATALOG, {"FAULT_LATENCY_MS": "600"}) as (port, child):
        answers: list[int] = []
        request = threading.Thread(target=lambda: answers.append(get(port)[0]))
        request.start()
        time.sleep(0.2)
        child.send_signal(signal.SIGTERM)
        request.join(timeout=10)
        assert answers == [200]
        assert child.wait(timeout=10) == 0
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        assert b"stopped after draining" in child.communicate()[0]


def test_catalog_readiness_is_deep(tmp_path: Path) -> None:
    gone = free_port()
    with service(CATALOG, {"PRICING_URL": f"http://127.0.0.1:{gone}"}) as (port, _):
        status, _, body = get(port, "/health/ready")
        assert status == 503 and "pricing unreachable" in json.loads(body)["reason"]
    with (
        service(PRICING) as (pricing_port, _),
        service(CATALOG, {"PRICING_URL": f"http://127.0.0.1:{pricing_port}"}) as (port, _),
    ):
        assert get(port, "/health/ready")[0] == 200
    broken = tmp_path / "catalog"
    shutil.copytree(CATALOG, broken)
    (broken / "app" / "items.json").write_text("[")
    with service(broken) as (port, _):
        status, _, body = get(port, "/health/ready")
        assert status == 503 and "items.json unreadable" in json.loads(body)["reason"]
