"""Telling people, from the release's own plan: who hears about what is frozen with it.

The notification targets of a release are part of its plan, so an edit to conveyor.yaml (or
a broken one) cannot silence the notifications of a rollout already in progress. Notifiers
are made by kind from a registry the composition root fills (``webhook`` built in).

Delivery never blocks a rollout: each notification is its own task, and a failure is
logged — the ledger stays the record.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping

from conveyor.core.plan import NotifyTarget
from conveyor.notify.base import Notification, Notifier
from conveyor.store.records import NewEvent, ReleaseRecord

log = logging.getLogger("conveyor.notify")

NotifierFactory = Callable[[NotifyTarget, str | None], Notifier]
"""Builds a notifier for a target, given its secret (read from the environment, or None)."""


class Notifications:
    def __init__(
        self,
        factories: Mapping[str, NotifierFactory],
        *,
        clock: Callable[[], float],
        environ: Mapping[str, str] = os.environ,
    ) -> None:
        self.factories = dict(factories)
        self.clock = clock
        self.environ = environ
        self._deliveries: set[asyncio.Task[None]] = set()
        self.markers: Callable[[], list[Notifier]] = list
        """The project's marker sinks as the config says now (``server/stack.py`` sets it)."""

    def send(self, release: ReleaseRecord, events: list[NewEvent]) -> None:
        """Hand the events people act on to the release's notifiers, and release markers
        to the project's marker sinks (Grafana), without waiting."""
        sinks: list[tuple[Notifier, str]] = [
            (notifier, target.webhook)
            for target in release.plan.notify
            if (notifier := self._notifier(target)) is not None
        ]
        sinks += [(marker, getattr(marker, "url", marker.kind)) for marker in self.markers()]
        for notifier, where in sinks:
            for event in events:
                if not notifier.wants(event.kind):
                    continue
                notification = Notification(
                    kind=event.kind,
                    service=release.service,
                    env=release.env,
                    revision=release.revision,
                    at=self.clock(),
                    details=event.details,
                    version=release.template,
                    commit=release.plan.commit,
                    digest=release.artifact_digest,
                )
                task = asyncio.create_task(self._deliver(notifier, where, notification))
                self._deliveries.add(task)
                task.add_done_callback(self._deliveries.discard)

    def _notifier(self, target: NotifyTarget) -> Notifier | None:
        factory = self.factories.get("webhook")
        if factory is None:
            return None
        secret = self.environ.get(target.secret_env) if target.secret_env else None
        if target.secret_env and not secret:
            log.warning(
                "notifications to %s are sent unsigned: $%s is not set in the server's environment",
                target.webhook,
                target.secret_env,
            )
        return factory(target, secret)

    async def _deliver(self, notifier: Notifier, where: str, notification: Notification) -> None:
        try:
            await notifier.notify(notification)
        except Exception as exc:  # best effort: the ledger is the record
            log.warning("notification %s to %s failed: %s", notification.kind, where, exc)

    async def close(self) -> None:
        """Give notifications in flight a moment, then drop them."""
        if self._deliveries:
            await asyncio.wait(set(self._deliveries), timeout=2.0)
        for task in list(self._deliveries):
            task.cancel()
