"""The ``Target`` seam: where instances run.

A target starts, supervises and stops instances and reports what it observes. It makes no
rollout decisions: restarting a crashed instance with backoff is supervision, deciding that a
version crash-loops and must be rolled back is the core's job. Implementations: ``local``
(supervised child processes); Kubernetes later.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from conveyor.core.model import InstanceObservation, InstanceSpec


class Target(Protocol):
    async def start(self) -> None:
        """Begin supervising; adopt instances that survived a previous server process."""

    async def adopt(self, env: str, epoch: int) -> None:
        """Take over one environment's surviving instances under lease ``epoch``; from then
        on a start carrying an older epoch for ``env`` is refused (``Fenced``)."""

    async def release(self, env: str) -> None:
        """Stop supervising ``env``'s instances, leaving them running for the new leader."""

    async def launch(self, spec: InstanceSpec) -> InstanceObservation:
        """Start one instance and return at once (readiness is observed later); refused
        (``Fenced``) when ``spec.epoch`` is older than the newest seen for its environment."""

    async def stop(self, instance_id: str) -> None:
        """Stop an instance gracefully (SIGTERM, then SIGKILL after its grace) and forget it."""

    def subscribe(self, listener: Callable[[str, str], None]) -> None:
        """Call ``listener(service, env)`` when an instance's readiness or liveness changes.

        Routing reacts to it at once instead of on the controller's next tick: the gap
        between an instance dying and users no longer being sent to it is what turns a
        crash into failed requests.
        """

    def observe(self, service: str, env: str) -> list[InstanceObservation]:
        """Every instance of a service in an environment that is not yet stopped."""

    async def close(self, *, stop_instances: bool) -> None:
        """Stop supervising; with ``stop_instances`` also stop every instance this target runs."""
