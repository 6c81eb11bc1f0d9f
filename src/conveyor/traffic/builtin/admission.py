"""Who gets a connection: the per-listener cap, the router-wide budget, and the refusals.

The decision is made in the listener's protocol factory, once per accepted socket, so the
proxy's hot path never sees it. Counting happens there too (not in ``connection_made``):
an event loop accepts a burst of sockets before it runs any ``connection_made``, and a cap
counted later would be overshot by the whole burst.

Past the cap a connection gets a short 503 with ``Connection: close`` and ``Retry-After``,
then a lingering close (FIN, then what the client sends is read and dropped) so that the
answer reaches a client that had already written its request. Each such refusal holds a
descriptor for up to ``RouterLimits.linger_timeout``, so their number is bounded too: past
``max_refusing`` a connection is reset at once, which frees its descriptor immediately and
is the only answer left that costs nothing.
"""

from __future__ import annotations

import asyncio
import logging
from typing import cast

from conveyor.traffic.builtin.proxy import ClientConnection, ProxyShared
from conveyor.traffic.builtin.table import TableSlot
from conveyor.traffic.builtin.wire import canned_response

log = logging.getLogger(__name__)

REFUSAL = canned_response(
    503,
    "this router is at its connection limit; retry shortly",
    keep_alive=False,
    head=False,
    retry_after=1,
)


class Gate:
    """Admission to one listener; counts its open connections and the router's."""

    __slots__ = ("cap", "full", "open", "refused", "shared", "slot")

    def __init__(self, slot: TableSlot, shared: ProxyShared) -> None:
        self.slot = slot
        self.shared = shared
        self.cap = shared.limits.max_connections
        self.open = 0
        self.refused = 0
        self.full = False  # refusing since the last admission: warned once for the episode

    def __call__(self) -> asyncio.Protocol:
        """The protocol for a socket just accepted (this object is the protocol factory)."""
        shared = self.shared
        if self.open < self.cap and shared.open < shared.budget:
            self.open += 1
            shared.open += 1
            self.full = False
            return ClientConnection(self.slot, shared, self.release)
        self.refused += 1
        if not self.full:
            self.full = True
            log.warning(
                "%s: connection limit reached (%d of %d open on this listener, %d of %d in the "
                "router); new connections get 503 until some close",
                self.slot.label,
                self.open,
                self.cap,
                shared.open,
                shared.budget,
            )
        if shared.refusing < shared.limits.max_refusing:
            return _Refusal(shared)
        return _Reset()

    def release(self) -> None:
        self.open -= 1
        self.shared.open -= 1


class _Refusal(asyncio.Protocol):
    """Answers 503 and closes, draining the client meanwhile."""

    __slots__ = ("shared", "timer", "transport")

    def __init__(self, shared: ProxyShared) -> None:
        self.shared = shared
        shared.refusing += 1
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)
        transport.write(REFUSAL)
        if transport.can_write_eof():
            transport.write_eof()
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(self.shared.limits.linger_timeout, transport.abort)

    def data_received(self, data: bytes) -> None:
        """Dropped: the request is not read, only drained."""

    def eof_received(self) -> bool:
        return False  # the client is done: close

    def connection_lost(self, exc: Exception | None) -> None:
        self.shared.refusing -= 1
        if self.timer is not None:
            self.timer.cancel()


class _Reset(asyncio.Protocol):
    """Closes at once with a reset: even a refusal is more than can be afforded now."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        cast(asyncio.Transport, transport).abort()
