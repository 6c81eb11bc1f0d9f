"""The composition root: every part of a running Conveyor, built in one place, by kind.

The server (``runner.py``) and the integration tests (``tests/controller/harness.py``) both
build their stack here, so what the tests exercise is what users run. Parts are chosen by
the ``kind`` the config names, from registries: built-in kinds first, then plug-ins
installed as entry points (``conveyor.routers``, ``conveyor.providers``,
``conveyor.notifiers``), loaded only when a kind is asked for.

Nothing else in Conveyor constructs a router, a target, a provider or a notifier.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conveyor.analysis.base import MetricProvider
from conveyor.analysis.providers import default_providers
from conveyor.application import Application
from conveyor.application.keys import StoreTrust, move_legacy_keys
from conveyor.application.project import ProjectSource
from conveyor.artifacts.signing import Keyring
from conveyor.artifacts.store import ArtifactStore
from conveyor.config.loader import LoadedProject
from conveyor.controller.controller import Controller, RouterFactory
from conveyor.controller.leadership import Leadership
from conveyor.controller.notifications import Notifications, NotifierFactory
from conveyor.core.plan import NotifyTarget
from conveyor.layout import Layout, private_file, tighten
from conveyor.notify import Notifier, WebhookNotifier
from conveyor.notify.grafana import GrafanaNotifier
from conveyor.runtime.base import Target
from conveyor.runtime.local import LocalTarget
from conveyor.store.engine import default_url
from conveyor.store.repository import Store
from conveyor.traffic.base import TrafficRouter
from conveyor.traffic.builtin import RouterProcess
from conveyor.traffic.haproxy import HAProxyRouter

log = logging.getLogger("conveyor.server")


def router_registry(
    layout: Layout, router_workers: Callable[[], int] = lambda: 1
) -> dict[str, RouterFactory]:
    """Routers by the ``router:`` kind environments name. ``router_workers`` reads the
    project's ``server: router_workers`` when the built-in router is first needed."""

    def haproxy() -> TrafficRouter:
        return HAProxyRouter(layout.routers)

    def builtin() -> TrafficRouter:
        # Its own process, so users are served while this server restarts (docs/router.md).
        return RouterProcess(layout.routers, workers=router_workers())

    def plugin(factory: Callable[..., TrafficRouter]) -> RouterFactory:
        return lambda: factory(layout)

    registry: dict[str, RouterFactory] = {"builtin": builtin, "haproxy": haproxy}
    for name, factory in _plugins("conveyor.routers").items():
        registry.setdefault(name, plugin(factory))
    return registry


def provider_registry() -> Callable[[], Mapping[str, MetricProvider]]:
    """A fresh set of metric providers by kind (one set per driver: the builtin one keeps
    windows of router counters)."""
    plugins = _plugins("conveyor.providers")

    def make() -> Mapping[str, MetricProvider]:
        providers = dict(default_providers())
        for name, factory in plugins.items():
            providers.setdefault(name, factory())
        return providers

    return make


def notifier_registry() -> dict[str, NotifierFactory]:
    def webhook(target: NotifyTarget, secret: str | None) -> Notifier:
        return WebhookNotifier(target.webhook, events=target.events, secret=secret)

    registry: dict[str, NotifierFactory] = {"webhook": webhook}
    for name, factory in _plugins("conveyor.notifiers").items():
        registry.setdefault(name, factory)
    return registry


def _plugins(group: str) -> dict[str, Any]:
    """Entry points of ``group`` by name, loaded lazily (only when the kind is used)."""
    found: dict[str, Any] = {}
    for entry in importlib.metadata.entry_points(group=group):

        def load(*args: Any, entry: importlib.metadata.EntryPoint = entry) -> Any:
            return entry.load()(*args)

        found[entry.name] = load
    return found


@dataclass
class Stack:
    """One project's running parts; ``close`` releases them (instances kept or stopped)."""

    layout: Layout
    project: ProjectSource
    store: Store
    artifacts: ArtifactStore
    keyring: Keyring
    controller: Controller
    app: Application
    shared: bool = False
    """The store is shared with other servers (PostgreSQL): leases decide who drives."""
    _ledger: asyncio.Task[None] | None = field(default=None, init=False, repr=False)
    _slos: asyncio.Task[None] | None = field(default=None, init=False, repr=False)
    _flags: asyncio.Task[None] | None = field(default=None, init=False, repr=False)

    async def start(self) -> None:
        await self.controller.start()
        # Verifies the ledger from its newest checkpoint, then keeps signing checkpoints; in
        # the background, so a standby takes over without waiting for it.
        self._ledger = asyncio.create_task(self.app.ledger.run(), name="ledger-checkpoints")
        self._slos = asyncio.create_task(self.app.slos.run(), name="slo-monitor")
        # Guarded flag rollouts: judged and stepped every second.
        self._flags = asyncio.create_task(self.app.flag_rollouts.run(), name="flag-rollouts")

    async def close(self, *, stop_instances: bool) -> None:
        try:
            for task in (self._slos, self._flags):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            if self._ledger is not None:
                self._ledger.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._ledger
                await asyncio.to_thread(self.app.ledger.wait_idle)
            await self.controller.close(stop_instances=stop_instances)
        finally:
            self.store.close()


def build_stack(
    config_file: Path,
    *,
    database_url: str | None = None,
    tick: float = 0.1,
    clock: Callable[[], float] = time.time,
    routers: Mapping[str, RouterFactory] | None = None,
    target: Target | None = None,
) -> Stack:
    """Everything a server runs for the project of ``config_file``; nothing started yet."""
    root = config_file.resolve().parent
    layout = Layout(root).ensure()
    # Files an earlier Conveyor left readable to others lose those permissions before
    # anything is read or served (layout.tighten).
    tightened = tighten(layout)
    if tightened.changed:
        log.warning(
            "took group and other permissions away from %d path(s) under %s written by an "
            "earlier Conveyor (e.g. %s)",
            len(tightened.changed),
            layout.state,
            ", ".join(tightened.changed[:3]),
        )
    for path in tightened.failed:
        log.warning("cannot tighten the permissions of %s under %s", path, layout.state)
    url = database_url or default_url(root)
    if url == f"sqlite:///{layout.database.resolve()}" and not layout.database.exists():
        private_file(layout.database, b"")  # SQLite would create it 0644; an empty file is new
    store = Store.open(url)
    # SQLite: one server per project (the runner's file lock), so a killed predecessor's
    # leases are taken at once. PostgreSQL: servers share it, one lease holder per env.
    shared = not url.startswith("sqlite")
    project = ProjectSource(config_file.resolve(), store, clock=clock)
    loaded = project.current()
    artifacts = ArtifactStore(root)
    keyring = Keyring(layout.server_keys, StoreTrust(store, clock))
    move_legacy_keys(layout, keyring, store, clock)
    controller = Controller(
        project_name=loaded.config.project,
        store=store,
        artifacts=artifacts,
        target=target if target is not None else LocalTarget(layout.runtime),
        routers=routers
        if routers is not None
        else router_registry(layout, lambda: _router_workers(project)),
        providers=provider_registry(),
        notifications=Notifications(notifier_registry(), clock=clock),
        environment_router=lambda env: _environment_router(project, env),
        workdir=root,
        clock=clock,
        tick=tick,
        leadership=Leadership(store, exclusive=not shared),
    )
    app = Application(project, store, artifacts, keyring, layout, controller, clock)
    controller.notifications.markers = lambda: _markers(project)
    return Stack(layout, project, store, artifacts, keyring, controller, app, shared)


def _markers(project: ProjectSource) -> list[Notifier]:
    """The marker sinks conveyor.yaml names now (read live: markers are not part of a
    release's plan; the token is read from the server's environment at each send)."""
    loaded: LoadedProject | None = project.last_good()
    grafana = loaded.config.markers.grafana if loaded is not None else None
    if grafana is None:
        return []
    return [
        GrafanaNotifier(
            grafana.url,
            os.environ.get(grafana.token_env),
            events=grafana.events,
            tags=grafana.tags,
            dashboard_uid=grafana.dashboard_uid,
        )
    ]


def _router_workers(project: ProjectSource) -> int:
    """How many processes the built-in router should run (read when it is first needed)."""
    loaded: LoadedProject | None = project.last_good()
    return loaded.config.server.router_workers if loaded is not None else 1


def _environment_router(project: ProjectSource, env: str) -> str | None:
    """The router an environment's config names, for releases stored before plans did."""
    loaded: LoadedProject | None = project.last_good()
    if loaded is None or env not in loaded.config.environments:
        return None
    return loaded.config.environments[env].router
