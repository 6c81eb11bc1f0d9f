"""The control protocol between ``conveyor server`` and the router process, version 1.1.

The built-in router runs as its own process (``traffic.builtin.daemon``) so that users keep
being served while the server crashes, restarts or is upgraded. The server talks to it over
one Unix socket in ``.conveyor/routers/builtin/`` (mode 0600, in a 0700 directory). Each
message is one line of JSON, at most ``MAX_LINE`` bytes; each request gets exactly one
answer, in order, so a connection is a simple blocking conversation.

Authentication, on every connection, before anything else:

1. the router greets: ``{"version": "1.1", "challenge": <hex>, "pid": ..., "boot": ...}``;
2. the client answers ``{"op": "hello", "version": "1.1", "proof": HMAC(secret, "client" +
   challenge), "nonce": <hex>}``;
3. the router checks the proof and answers ``{"ok": true, "proof": HMAC(secret, "router" +
   nonce)}``, which the client checks in turn: a process that merely took the socket's
   place cannot pass for our router.

The secret is a file next to the socket (``control.secret``, 0600, made by the first server
that needs a router, like ``admin.token``); it never crosses the socket. The router also
refuses peers of another user id (``SO_PEERCRED``). Anything sent before a valid hello is
answered with an error and the connection is closed.

Versioning: ``version`` is ``"MAJOR.MINOR"``. A minor bump only adds (new optional fields,
new ops answered ``unknown op`` by older routers); a major bump changes meaning. Both sides
refuse a peer of another major with an error that names both versions, so an old and a new
server can overlap during an upgrade as long as they share the major. What each minor
added: 1.1, the router's worker processes (``workers``): ``ping`` answers ``workers`` (how
many processes serve, the router's own included) and ``worker_pids``, and the ``workers``
op answers each process's pid, restarts and requests. A 1.0 router answers neither (it is
one process); a 1.0 server ignores both.

Requests (after hello), each answered ``{"ok": true, ...}`` or ``{"ok": false, "error":
..., "hint": ...}``: ``serve``, ``apply``, ``in_flight``, ``counters``, ``samples``,
``metrics``, ``routes``, ``ping``, ``workers``, ``shutdown``. The codecs below are the one
place route tables and counters become JSON and back.

The same line-JSON (``encode``/``decode``) also carries the router process's conversation
with its worker processes, over a private socketpair (``workers``); that one needs no
handshake, since only the two ends of the pair can speak on it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from collections.abc import Mapping
from typing import Any

from conveyor.core.model import Backend, HeaderRoute, Pool, RouteTable, VersionCounters
from conveyor.core.retry import RetryPolicy
from conveyor.traffic.builtin.metrics import SeriesSnapshot

PROTOCOL = "1.1"
MAX_LINE = 8 << 20  # a route table with thousands of instances fits; a runaway peer does not


class ProtocolError(Exception):
    """A message that breaks the protocol: the connection is answered once and closed."""


def major(version: object) -> int | None:
    """The major number of a ``"MAJOR.MINOR"`` version, or None if it is not one."""
    if not isinstance(version, str) or len(version) > 16:
        return None
    head, _, minor = version.partition(".")
    if not head.isdigit() or (minor and not minor.isdigit()):
        return None
    return int(head)


def compatible(version: object) -> str | None:
    """Why a peer speaking ``version`` cannot be talked to, or None if it can."""
    theirs = major(version)
    if theirs is None:
        return f"the peer sent no valid control protocol version ({str(version)[:20]!r})"
    if theirs != major(PROTOCOL):
        return (
            f"the peer speaks control protocol {version}, this side speaks {PROTOCOL}: "
            "different major versions cannot work together"
        )
    return None


def proof(secret: bytes, role: str, challenge: str) -> str:
    """What only a holder of the secret can compute for ``challenge`` (role-separated)."""
    return hmac.new(secret, f"{role}:{challenge}".encode(), hashlib.sha256).hexdigest()


def check_proof(secret: bytes, role: str, challenge: str, given: object) -> bool:
    return isinstance(given, str) and hmac.compare_digest(proof(secret, role, challenge), given)


def encode(message: Mapping[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    if len(line) > MAX_LINE:
        raise ProtocolError(f"message longer than {MAX_LINE} bytes")
    try:
        message = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise ProtocolError("a message must be a JSON object")
    return message


# --- route tables ---------------------------------------------------------------------


def _backend(raw: Any) -> Backend:
    instance_id, host, port = raw
    if not isinstance(instance_id, str) or not isinstance(host, str) or not isinstance(port, int):
        raise ValueError(f"bad backend {raw!r}")
    return Backend(instance_id, host, port)


def table_to_wire(table: RouteTable) -> dict[str, Any]:
    return {
        "pools": [
            {
                "version": pool.version,
                "weight": pool.weight,
                "backends": [[b.instance_id, b.host, b.port] for b in pool.backends],
            }
            for pool in table.pools
        ],
        "preview": [[b.instance_id, b.host, b.port] for b in table.preview],
        "preview_version": table.preview_version,
        "header_route": (
            None
            if table.header_route is None
            else [table.header_route.name, table.header_route.value, table.header_route.version]
        ),
        "stable_version": table.stable_version,
        "retry": table.retry.to_json(),
        "epoch": table.epoch,
    }


def table_from_wire(raw: Any) -> RouteTable:
    """The ``RouteTable`` of a message; ProtocolError when it is not one."""
    try:
        pools = tuple(
            Pool(str(p["version"]), int(p["weight"]), tuple(_backend(b) for b in p["backends"]))
            for p in raw["pools"]
        )
        preview = tuple(_backend(b) for b in raw.get("preview", ()))
        version = raw.get("preview_version")
        header = raw.get("header_route")
        stable = raw.get("stable_version")  # absent from a 1.0 server's table: no retries
        retry = raw.get("retry")
        return RouteTable(
            pools,
            preview,
            None if version is None else str(version),
            None if header is None else HeaderRoute(str(header[0]), str(header[1]), str(header[2])),
            stable_version=None if stable is None else str(stable),
            retry=RetryPolicy() if retry is None else RetryPolicy.from_json(retry),
            epoch=int(raw.get("epoch", 0)),
        )
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise ProtocolError(f"not a route table: {exc}") from None


# --- counters -------------------------------------------------------------------------


def counters_to_wire(counters: VersionCounters) -> list[Any]:
    return [
        counters.requests,
        counters.responses_2xx,
        counters.responses_3xx,
        counters.responses_4xx,
        counters.responses_5xx,
        counters.proxy_errors,
        counters.latency_sum,
        [["+Inf" if math.isinf(le) else le, n] for le, n in counters.latency_buckets],
        counters.retried,
        counters.retries_denied,
    ]


def counters_from_wire(raw: Any) -> VersionCounters:
    try:
        req, c2, c3, c4, c5, proxy, latency, buckets, *later = raw
        # Later minors append fields; an older router's counters stop at the buckets.
        retried, denied = [*later, 0, 0][:2]
        return VersionCounters(
            int(req),
            int(c2),
            int(c3),
            int(c4),
            int(c5),
            int(proxy),
            float(latency),
            tuple((float(le), int(n)) for le, n in buckets),
            int(retried),
            int(denied),
        )
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"not counters: {exc}") from None


def add_counters(a: VersionCounters, b: VersionCounters) -> VersionCounters:
    """Two runs' counters as one (a router restarted under a server: see ``client``)."""
    buckets: dict[float, int] = dict(a.latency_buckets)
    for le, n in b.latency_buckets:
        buckets[le] = buckets.get(le, 0) + n
    return VersionCounters(
        a.requests + b.requests,
        a.responses_2xx + b.responses_2xx,
        a.responses_3xx + b.responses_3xx,
        a.responses_4xx + b.responses_4xx,
        a.responses_5xx + b.responses_5xx,
        a.proxy_errors + b.proxy_errors,
        a.latency_sum + b.latency_sum,
        tuple(sorted(buckets.items())),
        a.retried + b.retried,
        a.retries_denied + b.retries_denied,
    )


def series_to_wire(series: SeriesSnapshot) -> list[Any]:
    return [
        series.service,
        series.env,
        series.version,
        counters_to_wire(series.counters),
        series.in_flight,
    ]


def series_from_wire(raw: Any) -> SeriesSnapshot:
    try:
        service, env, version, counters, in_flight = raw
        return SeriesSnapshot(
            str(service), str(env), str(version), counters_from_wire(counters), int(in_flight)
        )
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"not a series: {exc}") from None
