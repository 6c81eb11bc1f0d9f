"""HAProxy's ``show stat`` turned into Conveyor's per-version counters. Pure.

HAProxy counts per server and per backend; Conveyor counts per version. The mapping, which
``tests/traffic_haproxy`` checks against a real HAProxy, follows the built-in router's
accounting rules (``builtin.metrics``) as far as HAProxy's counters allow:

* a response relayed from an instance counts in its status class (``hrsp_*`` of the
  server that finally answered; a request retried elsewhere counts only there, because
  HAProxy counts a failed attempt that was retried in ``wretr``, not ``econ``/``eresp``);
* a request HAProxy itself failed after trying a server (connection refused or timed out on
  the last retry: ``econ``; empty, broken or late response: ``eresp``) is a proxy error of
  that server's version;
* a request with no server to go to (no eligible version) increments the backend's
  ``econ`` but no server's, so ``backend econ - sum(server econ)`` is the ``NO_VERSION``
  count, as the built-in router counts its 503s under ``"-"``;
* a slot (see ``plan``) stands for different instances over time and HAProxy's counters
  never reset, so the router notes a slot's counters when it is parked (``baselines``) and
  banks the difference under the version it served;
* ``retried`` is ``wretr``: attempts of that version HAProxy retried on another server
  (connection failures, empty responses, and since ``retry-on`` lists them, 5xx answers to
  GET/HEAD/OPTIONS). They are *not* errors: HAProxy does not say which were 5xx and which a
  stale keep-alive connection, and counting the latter would roll back healthy canaries.
  So through HAProxy the judges do not see a canary's failures that stable answered (the
  built-in router counts them; docs/router.md, "A bad canary's GETs");
* one difference: a response cut short after its head was relayed is counted by HAProxy
  both in its status class and in ``eresp`` (as ``srv_abrt``). It counts once in
  ``requests`` and as a proxy error, but also stays in its status class.

Latency is not in ``show stat`` (HAProxy keeps only averages over the last 1024
requests), see ``latency`` for where the histograms come from.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields

from conveyor.core.model import VersionCounters
from conveyor.traffic.haproxy.plan import Slots


@dataclass(frozen=True)
class Tally:
    """The HAProxy counters Conveyor needs, for one server or a sum of them."""

    hrsp_1xx: int = 0
    hrsp_2xx: int = 0
    hrsp_3xx: int = 0
    hrsp_4xx: int = 0
    hrsp_5xx: int = 0
    hrsp_other: int = 0
    econ: int = 0
    eresp: int = 0
    srv_abrt: int = 0
    wretr: int = 0

    def __add__(self, other: Tally) -> Tally:
        return Tally(*(getattr(self, f.name) + getattr(other, f.name) for f in _FIELDS))

    def __sub__(self, other: Tally) -> Tally:
        return Tally(*(getattr(self, f.name) - getattr(other, f.name) for f in _FIELDS))

    @property
    def responses(self) -> int:
        return (
            self.hrsp_1xx
            + self.hrsp_2xx
            + self.hrsp_3xx
            + self.hrsp_4xx
            + self.hrsp_5xx
            + self.hrsp_other
        )

    @property
    def proxy_errors(self) -> int:
        return self.econ + self.eresp

    @property
    def requests(self) -> int:
        return self.responses + self.proxy_errors - self.srv_abrt

    def counters(
        self, latency_sum: float = 0.0, buckets: tuple[tuple[float, int], ...] = ()
    ) -> VersionCounters:
        return VersionCounters(
            requests=self.requests,
            responses_2xx=self.hrsp_2xx,
            responses_3xx=self.hrsp_3xx,
            responses_4xx=self.hrsp_4xx,
            # Statuses >= 600 are not HTTP; count them with the server errors they signal.
            responses_5xx=self.hrsp_5xx + self.hrsp_other,
            proxy_errors=self.proxy_errors,
            latency_sum=latency_sum,
            latency_buckets=buckets,
            retried=self.wretr,
        )


_FIELDS = fields(Tally)
ZERO = Tally()


@dataclass(frozen=True)
class StatRow:
    """One line of ``show stat``: a backend (``server == "BACKEND"``) or a server."""

    proxy: str
    server: str
    status: str
    scur: int
    weight: int
    tally: Tally
    addr: str = ""

    @property
    def is_backend(self) -> bool:
        return self.server == "BACKEND"


def _int(value: str | None) -> int:
    return int(value) if value else 0


def parse_stat(text: str) -> tuple[StatRow, ...]:
    """Rows of a ``show stat`` CSV answer, read by column name (the order varies by version).

    Frontend rows are skipped: every counter Conveyor needs lives on backends and servers.
    """
    header, _, body = text.lstrip("# ").partition("\n")
    rows: list[StatRow] = []
    for record in csv.DictReader(io.StringIO(body), fieldnames=header.split(",")):
        proxy, server = record.get("pxname"), record.get("svname")
        if not proxy or not server or server == "FRONTEND":
            continue
        tally = Tally(*(_int(record.get(f.name)) for f in _FIELDS))
        rows.append(
            StatRow(
                proxy,
                server,
                record.get("status") or "",
                _int(record.get("scur")),
                _int(record.get("weight")),
                tally,
                record.get("addr") or "",
            )
        )
    return tuple(rows)


def add_into(target: dict[str, Tally], key: str, tally: Tally) -> None:
    target[key] = target.get(key, ZERO) + tally


Views = dict[str, dict[str, Tally]]
"""Route label -> version -> tally."""


def worker_view(
    rows: Iterable[StatRow],
    backends: Mapping[str, str],
    slots: Mapping[str, Slots],
    baselines: Mapping[tuple[str, str], Tally],
    banked: Mapping[str, Mapping[str, Tally]],
    no_version: str,
) -> Views:
    """Sum one worker's rows per route and version.

    ``backends`` maps a backend to its route label (a route's main and preview backends
    share it). A slot's counters are cumulative over every instance it ever stood for, so
    its current instance's version gets ``row - baselines[(backend, slot)]``; the instances
    it stood for before are in ``banked`` (per backend, per version). Servers never leave
    a backend, so ``backend econ - sum(server econ)`` is exactly the requests that found no
    server. Rows of unknown proxies are ignored.
    """
    routes: Views = {}
    backend_econ: dict[str, int] = {}
    server_econ: dict[str, int] = {}
    for backend, by_version in banked.items():
        route = backends.get(backend)
        if route is not None:
            for version, tally in by_version.items():
                add_into(routes.setdefault(route, {}), version, tally)
    for row in rows:
        route = backends.get(row.proxy)
        if route is None:
            continue
        if row.is_backend:
            backend_econ[row.proxy] = backend_econ.get(row.proxy, 0) + row.tally.econ
            continue
        server_econ[row.proxy] = server_econ.get(row.proxy, 0) + row.tally.econ
        slot = slots.get(row.proxy, {}).get(row.server)
        if slot is None or slot.spec is None:
            continue
        since = row.tally - baselines.get((row.proxy, row.server), ZERO)
        add_into(routes.setdefault(route, {}), slot.spec.version, since)
    for backend, econ in backend_econ.items():
        unrouted = econ - server_econ.get(backend, 0)
        if unrouted > 0:
            add_into(routes.setdefault(backends[backend], {}), no_version, Tally(econ=unrouted))
    return routes


def merge(views: Iterable[Mapping[str, Mapping[str, Tally]]]) -> Views:
    """The sum of several workers' (or banks') route -> version -> tally maps."""
    total: Views = {}
    for view in views:
        for route, by_version in view.items():
            into = total.setdefault(route, {})
            for version, tally in by_version.items():
                add_into(into, version, tally)
    return total


def negated(views: Mapping[str, Mapping[str, Tally]]) -> Views:
    """``-views``: added to later views, it makes them count from the moment it was taken."""
    return {r: {v: ZERO - t for v, t in by.items()} for r, by in views.items()}
