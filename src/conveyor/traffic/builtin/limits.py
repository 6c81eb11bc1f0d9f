"""What the built-in router accepts from a client, in one place: ``RouterLimits``.

The router faces users (and anyone who can reach its port), so every resource a client can
make it hold is bounded: time (the request head, a stalled body, an idle keep-alive
connection), memory (the head, the part of a body kept for retries) and file descriptors
(connections). Past a limit the client gets the HTTP answer that names the problem
(408, 413, 431, 503 with ``Connection: close``) and the connection is closed, after the
router has read and thrown away what the client was still sending for a moment ("lingering
close", as nginx does), so that the answer is not lost to a TCP reset.

Why bodies are streamed past ``buffer_body_bytes`` rather than buffered up to the hard
maximum: buffering a whole request is what lets the router retry it on another instance,
but ``max_connections`` requests of 64 MiB each is far more memory than a router should
ever hold. Retries lose almost nothing when a large body is streamed, because of when they
happen: a request is only retried when nothing was written (the connection to the
instance failed), and a streamed request reads no body past its buffered start until its
upstream connection is open; once body bytes have been written the request is not
replayed (a non-idempotent request never was, and large GETs carry no body). So a request
up to ``buffer_body_bytes`` is buffered whole, as before; above it the router streams the
rest to the instance with back-pressure, over a fresh connection (never a reused one that
may turn out closed); above ``max_body_bytes`` (declared or counted) the answer is 413.

Timeouts are enforced by the router's sweeper (a few checks a second over all
connections), not by a timer per request: a deadline is therefore honoured within a sweep
interval (at most a quarter second), which keeps the hot path free of clock reads.

The defaults follow the common reverse proxies (figures in ``docs/router.md``, section
"Limits"): nginx allows a 1 MiB body, 8 KiB per header line and about 32 KiB of head, and
waits 60 s for a head and 75 s on an idle keep-alive connection; Envoy allows 60 KiB of
head and 100 headers; HAProxy 101 headers in a 16 KiB buffer, and advises a request
timeout of a few seconds (its examples use ``timeout http-request 10s``).
"""

from __future__ import annotations

import resource
from dataclasses import dataclass

_FD_RESERVE = 256
"""Descriptors kept for the rest of the process (store, logs, instances' pipes, the API)."""

_FDS_PER_CONNECTION = 2
"""A client connection and the upstream connection it uses while a request is in flight."""


@dataclass(frozen=True, slots=True)
class RouterLimits:
    """Bounds on what one client may make the router hold. Times in seconds, sizes in bytes.

    ``header_timeout`` counts from the first byte of a request to the end of its head (a
    partial head then gets 408), and is also how long a new connection may stay silent
    before its first byte (it is then closed without a word). ``body_timeout`` is
    how long a request body may stall between two reads. ``idle_timeout`` is how long a
    keep-alive connection may wait for its next request. ``max_head_bytes`` counts the
    request line and every header line; ``max_headers`` the header fields. Past either:
    431. ``max_connections`` applies to each listener and is lowered further, for the whole
    router, to fit the process' file descriptor limit (``connection_budget``); past it a
    new connection gets 503 with ``Connection: close`` while existing ones keep being
    served, and once ``max_refusing`` such answers are still being delivered, further
    connections are closed without one. ``buffer_body_bytes`` is how much of a request is
    kept in memory (and so can be retried); past it the body is streamed. ``max_body_bytes``
    is the largest body accepted: 413 above it. ``linger_timeout`` bounds how long the
    router keeps reading (and discarding) after a final error answer. ``max_pipeline`` is
    how many pipelined requests may wait on one connection before the router stops reading.
    """

    header_timeout: float = 10.0
    body_timeout: float = 30.0
    idle_timeout: float = 75.0
    max_head_bytes: int = 32 * 1024
    max_headers: int = 100
    max_connections: int = 4096
    max_refusing: int = 64
    buffer_body_bytes: int = 64 * 1024
    max_body_bytes: int = 64 * 1024 * 1024
    linger_timeout: float = 2.0
    max_pipeline: int = 32

    def __post_init__(self) -> None:
        for name in ("header_timeout", "body_timeout", "idle_timeout", "linger_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"RouterLimits.{name} must be positive")
        for name in ("max_head_bytes", "max_headers", "max_connections", "max_pipeline"):
            if getattr(self, name) < 1:
                raise ValueError(f"RouterLimits.{name} must be at least 1")
        if self.buffer_body_bytes < 0 or self.max_body_bytes < 0 or self.max_refusing < 0:
            raise ValueError("RouterLimits sizes and counts cannot be negative")

    @property
    def head_check_above(self) -> int:
        """Requests at most this long cannot break a head limit, so they are not inspected.

        The shortest header line llhttp accepts is four bytes (``X:\\r\\n``), so a request
        of ``4 * max_headers`` bytes or fewer cannot carry too many headers; this keeps the
        head check off the path of ordinary small requests.
        """
        return min(self.max_head_bytes, 4 * self.max_headers)


def connection_budget(soft_fd_limit: int | None = None) -> int:
    """How many client connections the whole router may hold open at once.

    Each costs up to two descriptors (its own and its upstream connection), and the rest of
    the process keeps ``_FD_RESERVE``; the figure follows the soft ``RLIMIT_NOFILE`` (raise
    it with ``ulimit -n`` or systemd's ``LimitNOFILE=`` to allow more). Accepting past it
    would make ``accept()`` fail with EMFILE, and then no connection, old or new, gets an
    answer: refusing early with a 503 keeps the existing ones served.
    """
    if soft_fd_limit is None:
        soft_fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft_fd_limit == resource.RLIM_INFINITY or soft_fd_limit < 0:
        soft_fd_limit = 1 << 20
    return max(16, (soft_fd_limit - _FD_RESERVE) // _FDS_PER_CONNECTION)
