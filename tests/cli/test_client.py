"""The CLI's HTTP client against a stub API on a real socket: headers, keep-alive, streaming,
retries, and every error of the tree mapped back to its class and exit code."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor import errors
from conveyor.cli import client as client_module
from conveyor.cli.client import ApiClient, blob_path
from conveyor.layout import Layout
from tests.cli.stub_api import Seen, StubApi, stub_api


@pytest.fixture
def stub(tmp_path: Path) -> Iterator[StubApi]:
    with stub_api(tmp_path) as running:
        yield running


def client_of(tmp_path: Path, **kwargs: float) -> ApiClient:
    return ApiClient.for_project(Layout(tmp_path), **kwargs)


def test_json_requests_carry_content_type_actor_and_reuse_one_connection(
    tmp_path: Path, stub: StubApi
) -> None:
    stub.on("GET", "/api/v1/status", (200, {"services": []}))
    stub.on("POST", "/api/v1/releases", lambda seen: (201, {"echo": seen.json()}))
    with client_of(tmp_path) as api:
        assert api.get("/api/v1/status", env="staging", limit=None) == {"services": []}
        body = {"service": "catalog", "env": "staging", "artifact": "sha256:x", "set": {}}
        assert api.post("/api/v1/releases", body) == {"echo": body}
        assert api.get("/api/v1/status") == {"services": []}
    get, post, _ = stub.seen
    assert get.query == {"env": ["staging"]}  # None is left out
    assert post.headers["content-type"] == "application/json"
    assert get.headers["accept"] == "application/json"
    assert "@" in post.headers["x-conveyor-actor"]
    assert post.headers["x-conveyor-actor"] == client_module.actor()
    assert stub.connections == 1  # keep-alive: three requests, one connection


def test_each_thread_has_its_own_connection(tmp_path: Path, stub: StubApi) -> None:
    stub.on("GET", "/api/v1/health", (200, {"ok": True}))
    api = client_of(tmp_path)
    threads = [
        threading.Thread(target=lambda: [api.get("/api/v1/health") for _ in range(5)])
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    api.close()
    assert len(stub.seen) == 15
    assert stub.connections == 3


def test_a_file_is_streamed_with_its_length(tmp_path: Path, stub: StubApi) -> None:
    blob = tmp_path / "archive.tar.gz"
    blob.write_bytes(b"\x1f\x8b" + bytes(range(256)) * 1000)
    digest = "sha256:" + hashlib.sha256(blob.read_bytes()).hexdigest()

    def check(seen: Seen) -> tuple[int, object]:
        got = "sha256:" + hashlib.sha256(seen.body).hexdigest()
        return 201, {"digest": got, "size": len(seen.body), "stored": True}

    stub.on("PUT", blob_path(digest), check)
    with client_of(tmp_path) as api:
        answer = api.put_file(blob_path(digest), blob)
    assert answer == {"digest": digest, "size": blob.stat().st_size, "stored": True}
    [seen] = stub.seen
    assert seen.headers["content-type"] == "application/octet-stream"
    assert seen.headers["content-length"] == str(blob.stat().st_size)
    assert "transfer-encoding" not in seen.headers


def test_a_connection_the_server_closed_is_replaced_for_a_get(
    tmp_path: Path, stub: StubApi
) -> None:
    stub.on("GET", "/api/v1/health", (200, {"ok": True}))
    with client_of(tmp_path) as api:
        api.get("/api/v1/health")
        stub.drop_after_each = True
        api.get("/api/v1/health")
        api.get("/api/v1/health")
    assert len(stub.seen) == 3


def test_an_idle_connection_is_reopened_before_a_post(
    tmp_path: Path, stub: StubApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A POST is never repeated, so it must not go out on a connection the server may have
    dropped for idleness."""
    stub.on("POST", "/api/v1/pipeline-events", (201, {"seq": 1}))
    monkeypatch.setattr(client_module, "IDLE_REOPEN", 0.05)
    with client_of(tmp_path) as api:
        api.post("/api/v1/pipeline-events", {"kind": "pipeline.started", "details": {}})
        time.sleep(0.1)
        api.post("/api/v1/pipeline-events", {"kind": "pipeline.finished", "details": {}})
    assert [s.connection for s in stub.seen] == [1, 2]


@pytest.mark.parametrize("name", sorted(errors.error_classes()))
def test_every_error_of_the_tree_comes_back_as_its_class(
    tmp_path: Path, stub: StubApi, name: str
) -> None:
    cls = errors.error_classes()[name]
    if issubclass(cls, errors.ConfigError):
        raised: errors.ConveyorError = cls(
            [errors.ConfigProblem("conveyor.yaml", 3, "services.x", "bad", "fix it")]
        )
    elif issubclass(cls, errors.ExpressionError):
        raised = cls("unexpected ')'", 4, "a > (1))")
    else:
        raised = cls(f"a {name} happened", hint="do the thing")
    stub.on("POST", "/api/v1/releases", (raised.http_status, raised.to_dict()))
    with client_of(tmp_path) as api, pytest.raises(errors.ConveyorError) as caught:
        api.post("/api/v1/releases", {})
    assert type(caught.value) is cls
    assert caught.value.exit_code == raised.exit_code
    assert caught.value.message == raised.message
    assert caught.value.hint == raised.hint


def test_an_error_the_client_does_not_know_maps_to_its_nearest_ancestor(
    tmp_path: Path, stub: StubApi
) -> None:
    wire = {
        "error": "FreezeWindow",
        "kinds": ["FreezeWindow", "Refused", "ConveyorError"],
        "message": "production is frozen until Monday",
        "hint": "use the emergency path",
        "exit_code": 5,
    }
    stub.on("POST", "/api/v1/releases", (403, wire))
    with client_of(tmp_path) as api, pytest.raises(errors.Refused) as caught:
        api.post("/api/v1/releases", {})
    assert caught.value.exit_code == 5 and caught.value.hint == "use the emergency path"


def test_a_server_bug_says_so_and_where_the_traceback_is(tmp_path: Path, stub: StubApi) -> None:
    wire = {
        "error": "InternalError",
        "kinds": ["InternalError"],
        "message": "the server failed on GET /api/v1/status: KeyError",
        "hint": "please report it with the server log (.conveyor/server.log)",
        "exit_code": 1,
    }
    stub.on("GET", "/api/v1/status", (500, wire))
    with client_of(tmp_path) as api, pytest.raises(errors.ConveyorError) as caught:
        api.get("/api/v1/status")
    assert type(caught.value) is errors.ConveyorError
    assert caught.value.message == (
        "this is a bug in Conveyor, in the server: "
        "the server failed on GET /api/v1/status: KeyError"
    )
    assert caught.value.exit_code == 1
    assert str(Layout(tmp_path).server_log) in (caught.value.hint or "")


def test_an_answer_that_is_not_a_conveyor_error(tmp_path: Path, stub: StubApi) -> None:
    stub.on("GET", "/api/v1/logs", (502, b"<html>Bad Gateway</html>"))
    with client_of(tmp_path) as api:
        with pytest.raises(errors.ConveyorError) as caught:
            api.get("/api/v1/logs")
        assert caught.value.message == (
            "the server answered 502 to GET /api/v1/logs: <html>Bad Gateway</html>"
        )
        assert "`conveyor down`" in (caught.value.hint or "")
        with pytest.raises(errors.ConveyorError, match="404 to GET /api/v1/nothing: Not Found"):
            api.get("/api/v1/nothing")  # the stub's unknown route, like an older server


def test_no_server_and_a_dead_server(tmp_path: Path) -> None:
    with pytest.raises(errors.ServerUnavailable, match="no Conveyor server is running"):
        client_of(tmp_path)
    with stub_api(tmp_path):
        api = client_of(tmp_path, timeout=2.0)
    with pytest.raises(errors.ServerUnavailable, match="connection refused") as caught:
        api.get("/api/v1/status")
    assert caught.value.exit_code == 7
    assert "server.log" in (caught.value.hint or "")


def test_a_server_that_does_not_answer_in_time(tmp_path: Path, stub: StubApi) -> None:
    def slow(seen: Seen) -> tuple[int, object]:
        time.sleep(1.0)
        return 200, {}

    stub.on("GET", "/api/v1/status", slow)
    with (
        client_of(tmp_path, timeout=0.2) as api,
        pytest.raises(errors.ServerUnavailable, match=r"did not answer within 0\.2s"),
    ):
        api.get("/api/v1/status")


def test_the_token_comes_from_the_environment_or_the_local_admin_file(
    tmp_path: Path, stub: StubApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    stub.on("GET", "/api/v1/whoami", (200, {"identity": "x"}))
    monkeypatch.delenv("CONVEYOR_TOKEN", raising=False)
    with client_of(tmp_path) as api:
        api.get("/api/v1/whoami")  # no token anywhere: none sent, the server decides
    Layout(tmp_path).admin_token.write_text("cvy_local\n")
    with client_of(tmp_path) as api:
        api.get("/api/v1/whoami")
    monkeypatch.setenv("CONVEYOR_TOKEN", "cvy_from_ci")
    with client_of(tmp_path) as api:
        api.get("/api/v1/whoami")
    sent = [seen.headers.get("authorization") for seen in stub.seen]
    assert sent == [None, "Bearer cvy_local", "Bearer cvy_from_ci"]
