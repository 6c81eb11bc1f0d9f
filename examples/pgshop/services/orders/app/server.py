"""The orders example service: orders in PostgreSQL, served over HTTP (stdlib + psycopg).

What it reads and writes is in ``queries.py``, the one file that changes as the schema moves
from ``customer`` to ``customer_email`` (docs/migrations.md walks through it). Readiness is
deep: the instance is ready only when the columns its queries need exist, so a release whose
code is ahead of the schema never receives users.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import psycopg
import queries

_local = threading.local()


def connection() -> psycopg.Connection:
    conn = getattr(_local, "conn", None)
    if conn is None or conn.closed:
        conn = psycopg.connect(os.environ["DATABASE_URL"], autocommit=True, connect_timeout=3)
        _local.conn = conn
    return conn


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/health/live":
            self.answer(200, {"live": True})
        elif path == "/health/ready":
            try:
                connection().execute(queries.NEEDS)
            except psycopg.Error as exc:
                _local.conn = None
                self.answer(503, {"ready": False, "why": str(exc).splitlines()[0]})
                return
            self.answer(200, {"ready": True, "version": os.environ.get("CONVEYOR_VERSION")})
        elif path == "/orders":
            rows = connection().execute(queries.LIST).fetchall()
            self.answer(200, [dict(zip(("id", "item", "customer"), r, strict=True)) for r in rows])
        else:
            self.answer(404, {"error": "not found"})

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        params = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if url.path != "/orders" or "item" not in params or "customer" not in params:
            self.answer(404, {"error": "POST /orders?item=...&customer=..."})
            return
        row = connection().execute(queries.INSERT, (params["item"], params["customer"])).fetchone()
        self.answer(200, {"id": row[0] if row else None})

    def answer(self, status: int, payload: object) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", int(os.environ.get("PORT", "8080"))), Handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(f"orders listening on {server.server_address[1]}", flush=True)
    server.serve_forever()
    sys.exit(0)


if __name__ == "__main__":
    main()
