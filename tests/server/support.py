"""A real API server in a thread, and a plain HTTP client for it."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from conveyor.server.api import create_app
from conveyor.server.stack import Stack, build_stack


@dataclass(frozen=True)
class Answer:
    status_code: int
    content: bytes

    def json(self) -> Any:
        return json.loads(self.content)

    @property
    def text(self) -> str:
        return self.content.decode(errors="replace")


class Client:
    """Plain HTTP/1.1 to the real server, as any client would speak it."""

    def __init__(self, port: int, token: str | None = None) -> None:
        self.port = port
        self.token = token

    def as_(self, token: str | None) -> Client:
        return Client(self.port, token)

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: object = None,
        content: bytes | str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        headers = dict(headers or {})
        if self.token is not None:
            headers.setdefault("authorization", f"Bearer {self.token}")
        if json_body is not None:
            content = json.dumps(json_body)
            headers["content-type"] = "application/json"
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            data = content.encode() if isinstance(content, str) else content
            conn.request(method.upper(), path, body=data, headers=headers)
            response = conn.getresponse()
            return Answer(response.status, response.read())
        finally:
            conn.close()

    def get(self, path: str) -> Answer:
        return self.request("GET", path)

    def post(self, path: str, **kwargs: Any) -> Answer:
        return self.request("POST", path, **kwargs)


@contextmanager
def serve(root: Path, config: str, port: int = 0, **options: Any) -> Iterator[tuple[Stack, Client]]:
    """``config`` as the project of a real server; the client holds its admin token."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "conveyor.yaml").write_text(config)
    stack = build_stack(root / "conveyor.yaml", database_url=f"sqlite:///{root / 'state.db'}")
    stack.app.tokens.bootstrap(stack.layout.admin_token, "admin@test")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    port = sock.getsockname()[1]
    app = create_app(stack.app, project_name="test", **options)
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="critical", lifespan="off", timeout_graceful_shutdown=1)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield stack, Client(port, stack.layout.admin_token.read_text().strip())
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
        stack.store.close()
