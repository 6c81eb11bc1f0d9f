"""The CLI's side of the HTTP API, on the standard library: JSON in, JSON out, errors back.

Every command that talks to the server pays for this module's imports before the server
has said a word, so it is ``http.client`` and ``json`` (~20 ms) rather than an HTTP library
(~90 ms with its dependencies). What a client library would give us that we need is small
and lives here:

- **one keep-alive connection per thread** (``conveyor run`` calls the API from its job
  threads), reopened when it has sat idle long enough that the server may have closed it,
  and retried once on a dropped connection for requests that are safe to repeat;
- **the caller's token** (``CONVEYOR_TOKEN``, else the admin token `conveyor up` made for
  the local user) on every request;
- **timeouts** on connect and on every read;
- **errors mapped back** to the class the server raised (``errors.from_wire``), exit code
  included; an answer that is not a Conveyor error (a proxy, an older server, a crash)
  becomes a message that says what answered and what to do.
"""

from __future__ import annotations

import getpass
import http.client
import json
import os
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, urlencode, urlsplit

from conveyor import __version__, errors
from conveyor.layout import Layout
from conveyor.server.files import running_server

JSON = "application/json"
TOKEN_VARIABLE = "CONVEYOR_TOKEN"  # noqa: S105 (the variable's name, not a token)
IDLE_REOPEN = 2.0  # seconds; the server closes idle keep-alive connections after 5
BLOCK = 64 * 1024
_DROPPED = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


def token(layout: Layout) -> str | None:
    """``CONVEYOR_TOKEN``, else the admin token the server made for the local user."""
    given = os.environ.get(TOKEN_VARIABLE, "").strip()
    if given:
        return given
    try:
        return layout.admin_token.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def actor() -> str:
    """Who is calling, as the ledger records it for now: ``user@host``."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


class Sink(Protocol):
    """Where a streamed answer goes: a binary file, or anything that takes bytes."""

    def write(self, data: bytes, /) -> object: ...


@dataclass
class _Connection:
    http: http.client.HTTPConnection
    last_used: float = 0.0  # monotonic; 0 = never used


class ApiClient:
    """Calls one server's API; safe to share between threads (each gets its connection)."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        caller: str | None = None,
        timeout: float = 30.0,
        server_log: Path | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or parts.hostname is None:
            raise errors.ServerUnavailable(
                f"the server address {url!r} is not an http:// URL",
                hint="restart the server: `conveyor down`, then `conveyor up`",
            )
        self.url = url.rstrip("/")
        self._host = parts.hostname
        self._port = parts.port
        self._timeout = timeout
        self._server_log = server_log
        self._headers = {
            "Accept": JSON,
            "User-Agent": f"conveyor-cli/{__version__}",
            "x-conveyor-actor": caller or actor(),
        }
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._local = threading.local()
        self._open: list[_Connection] = []
        self._lock = threading.Lock()

    @classmethod
    def for_project(cls, layout: Layout, *, timeout: float = 30.0) -> ApiClient:
        """The client of the server running for this project; none running is an error."""
        server = running_server(layout)
        if server is None:
            raise errors.ServerUnavailable(
                f"no Conveyor server is running for {layout.root}",
                hint="start it with `conveyor up` (or `conveyor server` in the foreground)",
            )
        return cls(server.url, token=token(layout), timeout=timeout, server_log=layout.server_log)

    # --- the calls ----------------------------------------------------------------------

    def get(self, path: str, **params: Any) -> Any:
        query = {k: _query_value(v) for k, v in params.items() if v is not None}
        target = f"{path}?{urlencode(query)}" if query else path
        return self._call("GET", target, None, {}, retry=True)

    def post(self, path: str, body: Mapping[str, Any]) -> Any:
        data = json.dumps(body).encode()
        return self._call("POST", path, data, {"Content-Type": JSON}, retry=False)

    def download(self, path: str, sink: Sink, **params: Any) -> int:
        """Stream a non-JSON answer (an export) into ``sink`` as it arrives; bytes written.

        The answer is never held whole: an audit export of a busy year is large. An error
        answer is JSON like any other and raised as its class, before ``sink`` sees a byte.
        A failure to write ``sink`` (a full disk) is the caller's ``OSError``, not the
        server's.
        """
        query = {k: _query_value(v) for k, v in params.items() if v is not None}
        target = f"{path}?{urlencode(query)}" if query else path
        connection, _ = self._connection()
        try:
            response = self._send(connection, "GET", target, None, {"Accept": "*/*"})
            if response.status >= 400:
                raw = response.read()
                self._drop(connection)
                raise self._error("GET", target, response.status, _parse(raw), raw)
        except (OSError, http.client.HTTPException) as exc:
            self._drop(connection)
            raise self._unreachable(exc) from None
        written = 0
        while True:
            try:
                chunk = response.read(BLOCK)
            except (OSError, http.client.HTTPException) as exc:
                self._drop(connection)
                raise self._unreachable(exc) from None
            if not chunk:
                break
            sink.write(chunk)
            written += len(chunk)
        self._drop(connection)  # a streamed answer ends the connection's usefulness
        return written

    def put_file(self, path: str, file: Path) -> Any:
        """Stream ``file`` as the request body (``Content-Length``, no chunking, no copy)."""
        size = file.stat().st_size
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        return self._call("PUT", path, file, headers, retry=True)

    def close(self) -> None:
        with self._lock:
            for connection in self._open:
                connection.http.close()
            self._open.clear()
        self._local = threading.local()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the wire -----------------------------------------------------------------------

    def _call(
        self,
        method: str,
        target: str,
        body: bytes | Path | None,
        headers: Mapping[str, str],
        *,
        retry: bool,
    ) -> Any:
        for attempt in (1, 2):
            connection, reused = self._connection()
            try:
                response = self._send(connection, method, target, body, headers)
                status, raw = response.status, response.read()
            except _DROPPED as exc:
                self._drop(connection)
                if reused and retry and attempt == 1:
                    continue  # the server closed a kept-alive connection: a fresh one
                raise self._unreachable(exc) from None
            except (OSError, http.client.HTTPException) as exc:
                self._drop(connection)
                raise self._unreachable(exc) from None
            connection.last_used = time.monotonic()
            if response.will_close:
                self._drop(connection)
            return self._answer(method, target, status, raw)
        raise AssertionError("unreachable")  # pragma: no cover

    def _send(
        self,
        connection: _Connection,
        method: str,
        target: str,
        body: bytes | Path | None,
        headers: Mapping[str, str],
    ) -> http.client.HTTPResponse:
        all_headers = {**self._headers, **headers}
        if isinstance(body, Path):
            with body.open("rb") as stream:
                connection.http.request(method, target, body=stream, headers=all_headers)
        else:
            connection.http.request(method, target, body=body, headers=all_headers)
        return connection.http.getresponse()

    def _connection(self) -> tuple[_Connection, bool]:
        """This thread's connection, and whether it has carried a request before."""
        connection: _Connection | None = getattr(self._local, "connection", None)
        if connection is not None and time.monotonic() - connection.last_used > IDLE_REOPEN:
            self._drop(connection)
            connection = None
        if connection is None:
            connection = _Connection(
                http.client.HTTPConnection(
                    self._host, self._port, timeout=self._timeout, blocksize=BLOCK
                )
            )
            self._local.connection = connection
            with self._lock:
                self._open.append(connection)
            return connection, False
        return connection, True

    def _drop(self, connection: _Connection) -> None:
        connection.http.close()
        if getattr(self._local, "connection", None) is connection:
            self._local.connection = None
        with self._lock:
            if connection in self._open:
                self._open.remove(connection)

    def _unreachable(self, exc: BaseException) -> errors.ServerUnavailable:
        if isinstance(exc, TimeoutError):
            what = f"the Conveyor server at {self.url} did not answer within {self._timeout:g}s"
        else:
            what = f"cannot reach the Conveyor server at {self.url}: {_describe(exc)}"
        log = f"; its log is {self._server_log}" if self._server_log else ""
        return errors.ServerUnavailable(what, hint=f"check it with `conveyor up`{log}")

    def _answer(self, method: str, target: str, status: int, raw: bytes) -> Any:
        body = _parse(raw)
        if status < 400:
            if body is None and raw:
                raise errors.ServerUnavailable(
                    f"{self.url} answered {method} {_path(target)} with something other than JSON",
                    hint="is another program listening on the server's port? "
                    "restart the server: `conveyor down`, then `conveyor up`",
                )
            return body
        raise self._error(method, target, status, body, raw)

    def _error(
        self, method: str, target: str, status: int, body: Any, raw: bytes
    ) -> errors.ConveyorError:
        kinds = _kinds(body)
        if "InternalError" in kinds:
            log = f"; the traceback is in {self._server_log}" if self._server_log else ""
            return errors.ConveyorError(
                f"this is a bug in Conveyor, in the server: {_detail(body, raw) or status}",
                hint=f"please report it{log}",
            )
        if kinds & errors.error_classes().keys():
            return errors.from_wire(body, status)
        detail = _detail(body, raw)
        return errors.ConveyorError(
            f"the server answered {status} to {method} {_path(target)}"
            + (f": {detail}" if detail else ""),
            hint="is the server older than this command? restart it: `conveyor down`, "
            "then `conveyor up`",
        )


def blob_path(digest: str) -> str:
    return f"/api/v1/blobs/{quote(digest, safe=':')}"


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _parse(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


def _path(target: str) -> str:
    return target.split("?", 1)[0]


def _kinds(body: Any) -> set[str]:
    """The error classes a wire error names (itself and its ancestors)."""
    if not isinstance(body, dict):
        return set()
    names = body.get("kinds") or [body.get("error")]
    return {n for n in names if isinstance(n, str)} if isinstance(names, list) else set()


def _detail(body: Any, raw: bytes) -> str:
    if isinstance(body, dict):
        return str(body.get("message") or body.get("detail") or "")
    return raw[:200].decode("utf-8", errors="replace").strip()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "the server closed the connection without answering"
    return str(exc) or type(exc).__name__
