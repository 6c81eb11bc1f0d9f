"""A minimal flag-set server on a real socket: serves whatever document the test sets,
with ETag/304, and records outcome reports — the relay's SDK contract, nothing more."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class SetServer:
    def __init__(self) -> None:
        self.document: dict[str, Any] = {"env": "production", "flags": {}, "segments": {}}
        self.requests = 0
        self.reports: list[dict[str, Any]] = []
        self.down = False

    @property
    def etag(self) -> str:
        body = json.dumps(self.document, sort_keys=True).encode()
        return '"' + hashlib.sha256(body).hexdigest()[:16] + '"'


@contextmanager
def set_server() -> Iterator[tuple[SetServer, str]]:
    state = SetServer()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            state.requests += 1
            if state.down:
                self._send(503, b"{}")
                return
            if self.headers.get("if-none-match") == state.etag:
                self._send(304, b"", etag=state.etag)
                return
            self._send(200, json.dumps(state.document).encode(), etag=state.etag)

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            state.reports.append(json.loads(self.rfile.read(length)))
            self._send(202, b"{}")

        def _send(self, status: int, body: bytes, etag: str | None = None) -> None:
            self.send_response(status)
            if etag:
                self.send_header("ETag", etag)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
