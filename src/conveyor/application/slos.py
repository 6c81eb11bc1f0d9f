"""SLOs evaluated by the server: sample, judge (``core/slo.py``), record, notify, act.

Every ``interval`` the monitor reads, for each SLO of conveyor.yaml in each environment it
applies to, the events it counts: the built-in router's counters of that service and
environment (every version summed), or the error ratio of each window from Prometheus.
``core.slo`` says which alerts fire; a change is a ledger event (``slo.alert.fired`` /
``slo.alert.cleared`` with the burn rates as evidence), sent to the notify webhooks of the
release running there. A page that fires while that environment has a rollout in progress
and opts in (``rollback_on_page_burn: true``) rolls the rollout back (reason ``slo-burn``).

Router samples live in memory (``core.slo.Series``, thinned as they age): a restarted
server starts its windows afresh, and until a window has filled it is judged on the history
there is. For a budget that survives restarts, count with Prometheus (``source:
prometheus``) or let Prometheus evaluate the same alerts (``conveyor slo rules``).

The error-budget policy reads ``exhausted``: an environment with ``when_budget_exhausted:
freeze`` refuses releases of a service whose budget there is spent (``releases.py``).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from conveyor.application.caller import SYSTEM
from conveyor.application.project import ProjectSource
from conveyor.config.slos import SloConfig
from conveyor.controller.controller import Controller
from conveyor.core.slo import (
    WINDOWS,
    AlertState,
    Budget,
    Series,
    Severity,
    budget,
    burn_rates,
    judge,
    transitions,
    window_name,
)
from conveyor.core.slo_rules import ratio_expr
from conveyor.errors import ConveyorError
from conveyor.store.records import NewEvent
from conveyor.store.repository import Store

log = logging.getLogger("conveyor.slo")

Key = tuple[str, str, str]  # service, env, slo name
RatioQuery = Callable[[str, str], Awaitable[float | None]]
"""An instant PromQL query (address, query) answering one number (None: no data)."""


async def prometheus_number(address: str, query: str) -> float | None:
    """One number from Prometheus' HTTP API; None when it has no data or cannot answer."""
    try:
        async with httpx.AsyncClient(timeout=5.0) as client:
            answer = await client.get(
                f"{address.rstrip('/')}/api/v1/query", params={"query": query}
            )
        body = answer.json()
    except (httpx.HTTPError, ValueError) as exc:
        log.warning("SLO query to %s failed: %s", address, exc)
        return None
    result = body.get("data", {}).get("result") if isinstance(body, dict) else None
    if body.get("status") != "success" or not isinstance(result, list) or len(result) != 1:
        return None
    try:
        value = float(result[0]["value"][1])
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class SloState:
    """One SLO in one environment, as ``conveyor slo status`` shows it."""

    service: str
    env: str
    slo: SloConfig
    budget: Budget
    burn: Mapping[float, float | None]
    firing: Mapping[Severity, bool]

    def to_json(self) -> dict[str, Any]:
        b = self.budget
        return {
            "service": self.service,
            "env": self.env,
            "slo": self.slo.name,
            "indicator": self.slo.indicator,
            "threshold": self.slo.threshold,
            "source": self.slo.source,
            "objective": self.slo.objective,
            "period": self.slo.period,
            "error_ratio": b.error_ratio,
            "events": b.events,
            "covered": b.covered,
            "budget_consumed": b.consumed,
            "budget_remaining": b.remaining,
            "exhausted": b.exhausted,
            "burn_rates": {window_name(w): r for w, r in sorted(self.burn.items())},
            "firing": [s for s, on in self.firing.items() if on],
        }


@dataclass
class SloMonitor:
    project: ProjectSource
    store: Store
    controller: Controller
    clock: Callable[[], float]
    interval: float = 10.0
    prometheus: RatioQuery | None = prometheus_number
    _series: dict[Key, Series] = field(default_factory=dict)
    _firing: dict[Key, dict[Severity, bool]] = field(default_factory=dict)
    _states: dict[Key, SloState] = field(default_factory=dict)

    def slos(self) -> list[tuple[str, str, SloConfig]]:
        loaded = self.project.last_good()
        if loaded is None:
            return []
        return [
            (service, env, slo)
            for service, spec in loaded.config.services.items()
            for slo in spec.slos
            for env in slo.environments
        ]

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except ConveyorError as exc:  # the store is down: try again next time
                log.warning("SLO evaluation failed: %s", exc.message)
            await asyncio.sleep(self.interval)

    async def tick(self) -> list[NewEvent]:
        """Sample and judge every SLO once; the events it appended."""
        now = self.clock()
        appended: list[NewEvent] = []
        for service, env, slo in self.slos():
            key = (service, env, slo.name)
            state = await self._judge(service, env, slo, now)
            if state is None:
                continue
            self._states[key] = state
            previous = self._firing.setdefault(key, {"page": False, "ticket": False})
            alerts = judge(state.burn)
            changes = transitions(previous, alerts)
            for severity, change, alert in changes:
                previous[severity] = change == "fired"
                event = self._event(service, env, slo, severity, change, alert, state)
                appended.append(event)
                self.store.append_events([event], actor=SYSTEM)
                current = self.store.current_release(service, env)
                if current is not None:
                    self.controller.notifications.send(current, [event])
                if change == "fired" and severity == "page":
                    await self._maybe_roll_back(service, env, slo, alert)
            self._states[key] = SloState(
                service, env, slo, state.budget, state.burn, dict(previous)
            )
        return appended

    def status(self, service: str | None = None, env: str | None = None) -> list[SloState]:
        return [
            s
            for s in self._states.values()
            if (service is None or s.service == service) and (env is None or s.env == env)
        ]

    def exhausted(self, service: str, env: str) -> SloState | None:
        """An SLO of ``service`` whose budget in ``env`` is spent, if any."""
        for state in self.status(service, env):
            if state.budget.exhausted:
                return state
        return None

    # --- internals --------------------------------------------------------------------

    async def _judge(self, service: str, env: str, slo: SloConfig, now: float) -> SloState | None:
        if slo.source == "prometheus":
            return await self._judge_prometheus(service, env, slo, now)
        counters = self.controller.route_counters(service, env)
        if counters is None:
            return None
        bad = (
            counters.errors
            if slo.indicator == "availability"
            else counters.requests - counters.within(slo.threshold or 0.0)
        )
        series = self._series.setdefault((service, env, slo.name), Series(keep=slo.period_seconds))
        series.add(now, float(counters.requests), float(bad))
        burn = burn_rates(series.samples, slo.objective, now)
        spent = budget(series.samples, slo.objective, slo.period_seconds, now)
        return SloState(service, env, slo, spent, burn, {})

    async def _judge_prometheus(
        self, service: str, env: str, slo: SloConfig, now: float
    ) -> SloState | None:
        if self.prometheus is None or slo.prometheus is None:
            return None
        spec = slo.spec(service, env)
        allowed = 1.0 - slo.objective
        burn: dict[float, float | None] = {}
        for window in WINDOWS:
            query = ratio_expr(spec, window_name(window))
            ratio = await self.prometheus(slo.prometheus.address, query)
            burn[window] = None if ratio is None else ratio / allowed
        ratio = await self.prometheus(slo.prometheus.address, ratio_expr(spec, slo.period))
        spent = Budget(slo.objective, slo.period_seconds, ratio, 0.0, slo.period_seconds)
        return SloState(service, env, slo, spent, burn, {})

    def _event(
        self,
        service: str,
        env: str,
        slo: SloConfig,
        severity: Severity,
        change: str,
        alert: AlertState,
        state: SloState,
    ) -> NewEvent:
        return NewEvent(
            f"slo.alert.{change}",
            {
                "slo": slo.name,
                "severity": severity,
                "objective": slo.objective,
                "rule": alert.rule.name if alert.rule else None,
                "summary": alert.describe(),
                "burn_rates": {window_name(w): r for w, r in sorted(alert.burn.items())},
                "budget_remaining": state.budget.remaining,
            },
            service=service,
            env=env,
        )

    async def _maybe_roll_back(
        self, service: str, env: str, slo: SloConfig, alert: AlertState
    ) -> None:
        loaded = self.project.last_good()
        if loaded is None or env not in loaded.config.environments:
            return
        if not loaded.config.environments[env].rollback_on_page_burn:
            return
        active = self.store.active_release(service, env)
        if active is None or not active.phase.in_progress:
            return
        driver = await self.controller.wake(service, env)
        if driver is None:  # another server drives env (leases): its own monitor rolls back
            return
        try:
            await driver.abort(
                SYSTEM,
                reason="slo-burn",
                message=f"SLO {slo.name} of {service} in {env}: {alert.describe()}",
            )
        except ConveyorError as exc:  # it ended on its own meanwhile
            log.info("no rollout to roll back for the SLO burn: %s", exc.message)
