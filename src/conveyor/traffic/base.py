"""The ``TrafficRouter`` seam: what splits users' requests between versions.

One router serves every (service, environment) pair on a stable address that never changes
across deploys. The controller hands it a complete ``RouteTable`` each time the desired
split changes; the router applies it atomically for new requests while requests already in
flight finish on the backend they started on (draining). Implementations: ``builtin``
(asyncio reverse proxy), ``haproxy`` later.
"""

from __future__ import annotations

from typing import Protocol

from conveyor.core.model import RouteTable, VersionCounters


class TrafficRouter(Protocol):
    async def serve(
        self, service: str, env: str, host: str, port: int, preview_port: int | None
    ) -> None:
        """Start listening for a service/environment (idempotent; same port every time)."""

    def apply(self, service: str, env: str, table: RouteTable) -> None:
        """Replace the route table; takes effect for the next request."""

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
