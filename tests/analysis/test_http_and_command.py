"""The http provider against a real local server; the command provider with real processes."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor.analysis import AnalysisContext
from conveyor.analysis.providers import CommandProvider, HttpProvider
from conveyor.analysis.providers.command import result_of
from conveyor.analysis.providers.http import PathError, pick
from conveyor.core.analysis import Measurement, MetricSpec

from .support import Clock, JsonServer, free_port, run

pytestmark = pytest.mark.integration

DOCUMENT = {"ready": True, "checks": [{"name": "db", "status": "ok"}], "odd key": 3}


def _answer(path: str) -> tuple[int, str, bytes]:
    if path == "/ready":
        return 200, "application/json", json.dumps(DOCUMENT).encode()
    if path == "/not-ready":
        return 503, "application/json", b'{"ready": false}'
    if path == "/text":
        return 200, "text/plain", b"all good\n"
    if path == "/number":
        return 200, "text/plain", b"0.5\n"
    if path == "/slow":
        time.sleep(1.0)
        return 200, "application/json", b"1"
    return 404, "text/plain", b"nope"


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    http = JsonServer(_answer)
    yield f"http://127.0.0.1:{http.port}"
    http.close()


def measure(
    provider: HttpProvider | CommandProvider,
    config: dict[str, Any],
    context: AnalysisContext | None = None,
    **overrides: Any,
) -> Measurement:
    values: dict[str, Any] = {"name": "m", "provider": provider.kind, "config": config}
    values |= {"timeout": 5.0}
    values.update(overrides)
    spec = MetricSpec(**values)
    ctx = context or AnalysisContext("run", clock=Clock())
    return run(lambda: provider.measure(spec, ctx))


# -- http ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("$", DOCUMENT),
        ("$.ready", True),
        ("ready", True),
        ("$.checks[0].status", "ok"),
        ("checks.0.name", "db"),
        ("$.checks[-1].name", "db"),
        ("$['odd key']", 3),
        ('$["checks"][0]["status"]', "ok"),
    ],
)
def test_pick(path: str, expected: object) -> None:
    assert pick(DOCUMENT, path) == expected


@pytest.mark.parametrize("path", ["$.missing", "$.checks[3]", "$.ready.x", "$.checks.name", "$..x"])
def test_pick_refuses_what_is_not_there(path: str) -> None:
    with pytest.raises(PathError):
        pick(DOCUMENT, path)


def test_http_judges_a_json_value(server: str) -> None:
    config = {"url": f"{server}/ready", "json_path": "$.ready"}
    measurement = measure(HttpProvider(), config, success_condition="result == true")
    assert (measurement.phase, measurement.value) == ("successful", True)
    assert measurement.evidence["status"] == 200
    nested = {"url": f"{server}/ready", "json_path": "$.checks[0].status"}
    assert measure(HttpProvider(), nested, success_condition="result == 'fine'").phase == "failed"


def test_http_non_2xx_is_an_error_not_a_verdict(server: str) -> None:
    config = {"url": f"{server}/not-ready", "json_path": "$.ready"}
    measurement = measure(HttpProvider(), config, success_condition="result == true")
    assert measurement.phase == "error"
    assert measurement.message == f"GET {server}/not-ready answered 503 Service Unavailable"
    assert measurement.evidence["body"] == '{"ready": false}'


def test_http_missing_path_is_an_error(server: str) -> None:
    config = {"url": f"{server}/ready", "json_path": "$.nope"}
    measurement = measure(HttpProvider(), config)
    assert (measurement.phase, measurement.message) == (
        "error",
        "json_path '$.nope': nothing at '.nope'",
    )


def test_http_body_without_path_is_the_result(server: str) -> None:
    text = measure(HttpProvider(), {"url": f"{server}/text"}, success_condition="'good' in result")
    assert (text.phase, text.value) == ("successful", "all good")
    number = measure(HttpProvider(), {"url": f"{server}/number"}, failure_condition="result > 0.1")
    assert (number.phase, number.value) == ("failed", 0.5)  # a bare number is JSON
    with_path = measure(HttpProvider(), {"url": f"{server}/text", "json_path": "$.x"})
    assert with_path.phase == "error" and "did not answer JSON" in with_path.message


def test_http_timeout_and_refused_connection_are_errors(server: str) -> None:
    slow = measure(HttpProvider(), {"url": f"{server}/slow"}, timeout=0.2)
    assert slow.phase == "error" and slow.message.startswith(f"GET {server}/slow:")
    refused = measure(HttpProvider(), {"url": f"http://127.0.0.1:{free_port()}/"})
    assert refused.phase == "error"


# -- command ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stdout", "code", "expected"),
    [
        ("0.02\n", 0, 0.02),
        ("checking...\n-3e-2\n\n", 1, -0.03),  # the last line wins, whatever the exit code
        ("done at 12:30\n", 0, 1.0),  # a line that is not a number is no result
        ("", 0, 1.0),
        ("", 2, 0.0),
    ],
)
def test_result_rule(stdout: str, code: int, expected: float) -> None:
    assert result_of(stdout, code) == expected


def test_command_printed_number_is_judged() -> None:
    config = {"run": [sys.executable, "-c", "print('warming'); print(0.02)"]}
    measurement = measure(CommandProvider(), config, failure_condition="result > 0.01")
    assert (measurement.phase, measurement.value) == ("failed", 0.02)
    assert measurement.evidence["exit_code"] == 0
    assert measurement.evidence["stdout"] == "warming\n0.02\n"


def test_command_without_conditions_passes_on_exit_zero() -> None:
    passed = measure(CommandProvider(), {"run": "echo checking; exit 0"})
    assert (passed.phase, passed.value, passed.message) == (
        "successful",
        1.0,
        "exit code 0, result 1",
    )
    failed = measure(CommandProvider(), {"run": "echo oops >&2; exit 3"})
    assert (failed.phase, failed.value) == ("failed", 0.0)
    assert failed.evidence["stderr"] == "oops\n"


def test_command_sees_the_allow_list_not_the_servers_secrets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SHOP_DB_PASSWORD", "server-side-secret")
    monkeypatch.setenv("CONVEYOR_DATABASE_URL", "postgresql://u:pw@db/x")
    monkeypatch.setenv("LANG", "C.UTF-8")
    measurement = measure(CommandProvider(), {"run": "env"})
    stdout = measurement.evidence["stdout"]
    assert "server-side-secret" not in stdout and "CONVEYOR_DATABASE_URL" not in stdout
    assert "LANG=C.UTF-8" in stdout and "PATH=" in stdout


def test_command_sees_args_and_runs_in_the_workdir(tmp_path: Path) -> None:
    script = tmp_path / "check.sh"
    script.write_text(
        '#!/bin/sh\necho "$CONVEYOR_ARG_CANARY_VERSION" >&2\necho "$CONVEYOR_ARG_LIMIT"\n'
    )
    script.chmod(0o755)
    context = AnalysisContext(
        "run", args={"limit": "0.7", "canary-version": "v2"}, workdir=tmp_path, clock=Clock()
    )
    measurement = measure(
        CommandProvider(), {"run": ["./check.sh"]}, context=context, success_condition="result < 1"
    )
    assert (measurement.phase, measurement.value) == ("successful", 0.7)
    assert measurement.evidence["stderr"] == "v2\n"


def test_command_that_cannot_start_is_an_error(tmp_path: Path) -> None:
    measurement = measure(CommandProvider(), {"run": [str(tmp_path / "missing.sh")]})
    assert measurement.phase == "error"
    assert measurement.message.endswith("missing.sh: No such file or directory")


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state == "Z"  # a zombie waiting for its (re)parent: it no longer runs


def test_command_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    run_it = f"sleep 30 & echo $! > {pidfile}; wait"
    started = time.monotonic()
    measurement = measure(CommandProvider(), {"run": run_it}, timeout=0.5)
    assert time.monotonic() - started < 5
    assert measurement.phase == "error"
    assert measurement.message == "/bin/sh ran longer than 0.5s; its process group was killed"
    assert measurement.evidence["killed"] is True
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while not _gone(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(child), f"grandchild {child} survived the timeout"
    if not _gone(child):  # pragma: no cover - keep the machine clean if the assert is wrong
        os.kill(child, 9)
