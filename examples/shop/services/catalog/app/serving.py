"""HTTP plumbing of the example services: keep-alive, version headers, graceful stop.

Stdlib only, because an example runs under whatever ``python3`` is on PATH with no venv.
``ThreadingHTTPServer`` with HTTP/1.1 keep-alive is fast enough for demos and benchmarks as
long as every response leaves in ONE write: a header write followed by a body write would
meet Nagle's algorithm and the peer's delayed ACK and cost 40 ms per request.

SIGTERM follows the contract Conveyor's runtime relies on: stop accepting, let in-flight
requests finish (answering them with ``Connection: close``), then exit 0.

This file is duplicated in every example service: an artifact holds only its own service's
directory. A test keeps the copies identical.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

# (status, JSON payload) for a path and its query parameters; status DROP: no answer at all
Route = Callable[[str, dict[str, str]], tuple[int, Any]]
DROP = 0

_REASONS = {200: "OK", 404: "Not Found", 500: "Internal Server Error", 503: "Service Unavailable"}


def _version() -> str:
    """The version Conveyor injected, else the VERSION file at the artifact's root."""
    injected = os.environ.get("CONVEYOR_VERSION")
    if injected:
        return injected
    try:
        return Path("VERSION").read_text().strip() or "unknown"
    except OSError:
        return "unknown"


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, port: int, route: Route) -> None:
        self.route = route
        self.identity = (
            f"X-Conveyor-Version: {_version()}\r\n"
            f"X-Conveyor-Revision: {os.environ.get('CONVEYOR_REVISION', '0')}\r\n"
        )
        self.draining = False
        self._inflight = 0
        self._idle = threading.Condition()
        super().__init__(("127.0.0.1", port), Handler)

    def enter(self) -> None:
        with self._idle:
            self._inflight += 1

    def leave(self) -> None:
        with self._idle:
            self._inflight -= 1
            self._idle.notify_all()

    def wait_idle(self, timeout: float) -> None:
        with self._idle:
            self._idle.wait_for(lambda: self._inflight == 0, timeout)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: Server

    def do_GET(self) -> None:
        self.server.enter()
        try:
            url = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            try:
                status, payload = self.server.route(url.path, query)
            except Exception as exc:  # a bug in a demo must not kill the connection silently
                status, payload = 500, {"error": f"{type(exc).__name__}: {exc}"}
            if status == DROP:  # a fault: close the connection without a word
                self.close_connection = True
                return
            self._send(status, payload)
        finally:
            self.server.leave()

    def do_POST(self) -> None:
        """Like GET (the body is read and ignored): lets tests tell what a router retries."""
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(min(length, 1 << 20))
        self.do_GET()

    def _send(self, status: int, payload: Any) -> None:
        body = (json.dumps(payload) + "\n").encode()
        closing = self.server.draining or self.close_connection
        connection = "Connection: close\r\n" if closing else ""
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n"
            f"{self.server.identity}"
            f"{connection}\r\n"
        )
        self.close_connection = closing
        self.wfile.write(head.encode() + body)

    def log_message(self, format: str, *args: Any) -> None:
        """Access logs would drown the instance log under load; errors still reach stderr."""


def serve(name: str, route: Route, describe: str) -> None:
    """Listen on 127.0.0.1:$PORT until SIGTERM, then drain and exit 0."""
    port = int(os.environ.get("PORT", "8080"))
    server = Server(port, route)

    def on_term(signum: int, frame: object) -> None:
        server.draining = True
        # shutdown() waits for serve_forever() to return, which runs in this very thread
        threading.Thread(target=server.shutdown, name="shutdown").start()

    signal.signal(signal.SIGTERM, on_term)
    print(
        f"{name} {_version()} listening on 127.0.0.1:{port} "
        f"instance={os.environ.get('CONVEYOR_INSTANCE_ID', '-')} "
        f"project={os.environ.get('CONVEYOR_PROJECT', '-')} {describe}",
        flush=True,
    )
    server.serve_forever(poll_interval=0.1)
    server.server_close()  # stop accepting before draining
    server.wait_idle(timeout=60)
    print(f"{name} stopped after draining", flush=True)
    sys.exit(0)
