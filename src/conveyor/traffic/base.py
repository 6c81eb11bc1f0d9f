"""The ``TrafficRouter`` seam: what splits users' requests between versions.

One router serves every (service, environment) pair on a stable address that never changes
across deploys. The controller hands it a complete ``RouteTable`` each time the desired
split changes; the router applies it atomically for new requests while requests already in
flight finish on the backend they started on (draining). Implementations: ``builtin``
(an asyncio reverse proxy in its own process, ``traffic.builtin.client``) and ``haproxy``.

The router is the data plane: it must outlive the server that drives it. ``detach()`` is
what a server stopping or restarting calls (the router keeps serving its last tables and
the next server adopts it); ``close()`` is ``conveyor down``: stop serving.
"""

from __future__ import annotations

from typing import Protocol

from conveyor.core.leases import admits
from conveyor.core.model import RouteTable, VersionCounters
from conveyor.errors import Fenced


class TrafficRouter(Protocol):
    async def serve(
        self, service: str, env: str, host: str, port: int, preview_port: int | None
    ) -> None:
        """Start listening for a service/environment (idempotent; same port every time)."""

    def apply(self, service: str, env: str, table: RouteTable) -> None:
        """Replace the route table; takes effect for the next request.

        ``table.epoch`` is the pushing server's lease epoch: a table with a lower epoch than
        the highest seen for (service, env) is refused with ``Fenced`` (``fence_table``)."""

    def in_flight(self, service: str, env: str, instance_id: str) -> int:
        """Requests currently being proxied to an instance (0 once it is drained)."""

    def counters(self, service: str, env: str) -> dict[str, VersionCounters]:
        """Cumulative counters per version since this router started."""

    def latency_samples(self, service: str, env: str, version: str) -> tuple[float, ...]:
        """Recent response times of a version in seconds (bounded); empty if not kept."""

    def prometheus_text(self) -> str:
        """All counters of every route in Prometheus text exposition format."""

    async def close(self) -> None:
        """Stop listening everywhere; in-flight requests are given a moment to finish."""

    async def detach(self) -> None:
        """Let go of the router, leaving it serving its last tables for a successor to adopt
        (a router that cannot outlive this process closes instead)."""


def fence_table(
    seen: dict[tuple[str, str], int], service: str, env: str, table: RouteTable
) -> None:
    """The router's fence: refuse a table pushed under an older lease epoch than the newest
    seen for (service, env), remember a newer one. ``seen`` is the router's own memory."""
    key = (service, env)
    highest = seen.get(key, 0)
    if not admits(highest, table.epoch):
        raise Fenced(
            f"refused a route table for {service}/{env} at epoch {table.epoch}: "
            f"a server at epoch {highest} drives it now",
            hint="this server lost the environment's lease; the current holder routes it",
        )
    seen[key] = max(highest, table.epoch)


class Unservable(Protocol):
    """Optional: a router that lives in the server process can stop listening for one
    service/environment when the server loses its lease, freeing the port for the new
    leader (``BuiltinRouter``). Routers in their own process (HAProxy) need not."""

    def unserve(self, service: str, env: str) -> None: ...
