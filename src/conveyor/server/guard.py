"""Host and Origin allow-lists: the server answers only for its own names and pages.

A web page in the operator's browser can send requests to ``127.0.0.1``: without a
preflight for "simple" requests, and through DNS rebinding (``evil.example`` resolving to
127.0.0.1) even with the victim's dashboard cookie. Two checks close that,
before any route runs:

* ``Host`` must be one of the server's names (loopback names by default, more with
  ``conveyor server --allow-host``): a rebound name is refused.
* ``Origin``, when a browser sends one, must be the server's own origin: a page elsewhere
  cannot call the API, even a GET.

Tokens stop everyone else; these stop the browser from lending its network position.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Receive, Scope, Send

LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


class HostGuard:
    def __init__(self, app: ASGIApp, hosts: frozenset[str] = LOCAL_HOSTS) -> None:
        self.app = app
        self.hosts = frozenset(h.lower() for h in hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "")
        problem = None
        if _hostname(host) not in self.hosts:
            problem = f"this server does not answer for host {host[:100]!r}"
        else:
            origin = headers.get("origin")
            if origin is not None and origin.lower() not in self._origins(host):
                problem = f"requests from {origin[:100]!r} are not allowed"
        if problem is None:
            await self.app(scope, receive, send)
            return
        body = json.dumps(
            {
                "error": "Forbidden",
                "kinds": ["Forbidden", "ConveyorError"],
                "message": problem,
                "hint": "call the API by its own address (add names with "
                "`conveyor server --allow-host`)",
                "exit_code": 13,
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 403,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _origins(self, host: str) -> set[str]:
        """The server's own origins: each allowed name with the port it was reached on."""
        port = host.rsplit(":", 1)[1] if ":" in host and not host.endswith("]") else ""
        suffix = f":{port}" if port.isdigit() else ""
        return {f"{scheme}://{name}{suffix}" for name in self.hosts for scheme in ("http", "https")}


def _hostname(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if ":" in host else host
