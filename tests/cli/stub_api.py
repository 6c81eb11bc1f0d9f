"""A stand-in for `conveyor server`'s API: canned answers, every request recorded.

The client's own behaviour (headers, keep-alive, streaming, error mapping) and what a
command imports are questions about the CLI, not about the server, so these tests answer
from a table instead of starting a real server (which the integration stories do). The
stub listens on a real socket and publishes itself in ``.conveyor/server.json`` the way a
server does, with this test process's pid, so the real `conveyor` command finds it.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from conveyor.layout import Layout


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    connection: int  # which TCP connection carried it (1, 2, ...)

    def json(self) -> Any:
        return json.loads(self.body)


NOT_FOUND = {  # what Starlette's router answers, through the API's error handler
    "error": "HTTPError",
    "kinds": ["HTTPError"],
    "message": "Not Found",
    "hint": None,
    "exit_code": 1,
}
Answer = tuple[int, Any]  # status, JSON body (bytes are sent as they are)
Route = Callable[[Seen], Answer]


@dataclass
class StubApi:
    routes: dict[tuple[str, str], Route | Answer] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    connections: int = 0
    url: str = ""
    drop_after_each: bool = False  # close every connection after answering

    def on(self, method: str, path: str, answer: Route | Answer) -> None:
        self.routes[(method, path)] = answer

    def requests(self, method: str, path: str) -> list[Seen]:
        return [s for s in self.seen if (s.method, s.path) == (method, path)]


def _handler(stub: StubApi, lock: threading.Lock) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as uvicorn does

        def setup(self) -> None:
            super().setup()
            with lock:
                stub.connections += 1
                self.number = stub.connections

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            parts = urlsplit(self.path)
            seen = Seen(
                self.command,
                parts.path,
                parse_qs(parts.query),
                {k.lower(): v for k, v in self.headers.items()},
                body,
                self.number,
            )
            with lock:
                stub.seen.append(seen)
            route = stub.routes.get((self.command, parts.path))
            if route is None:
                status, answer = 404, NOT_FOUND
            elif callable(route):
                status, answer = route(seen)
            else:
                status, answer = route
            data = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if stub.drop_after_each:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            try:
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client gave up waiting

        do_GET = do_POST = do_PUT = _serve

    return Handler


@contextmanager
def stub_api(root: Path, stub: StubApi | None = None) -> Iterator[StubApi]:
    """Serve ``stub`` and publish it as ``root``'s server until the block ends."""
    stub = stub or StubApi()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(stub, threading.Lock()))
    server.daemon_threads = True
    stub.url = f"http://127.0.0.1:{server.server_address[1]}"
    layout = Layout(root).ensure()
    layout.server_file.write_text(json.dumps({"pid": os.getpid(), "url": stub.url}))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield stub
    finally:
        server.shutdown()
        server.server_close()
        layout.server_file.unlink(missing_ok=True)
