"""Pure traffic arithmetic: route tables from weights, error rates from counter snapshots."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from math import gcd

from conveyor.core.model import (
    HeaderRoute,
    InstanceObservation,
    Pool,
    RouteTable,
    VersionCounters,
)
from conveyor.core.retry import RetryPolicy
from conveyor.core.state import TrafficWindow


def normalized(weights: Mapping[str, int]) -> dict[str, int]:
    """Weights reduced to their proportions, so {a: 2, b: 2} equals {a: 1, b: 1}."""
    live = {v: w for v, w in weights.items() if w > 0}
    if not live:
        return {}
    divisor = 0
    for w in live.values():
        divisor = gcd(divisor, w)
    return {v: w // divisor for v, w in sorted(live.items())}


def same_split(a: Mapping[str, int], b: Mapping[str, int]) -> bool:
    return normalized(a) == normalized(b)


def route_table(
    weights: Mapping[str, int],
    instances: Iterable[InstanceObservation],
    *,
    draining: frozenset[str] = frozenset(),
    preview_version: str | None = None,
    header_route: HeaderRoute | None = None,
    stable_version: str | None = None,
    retry: RetryPolicy | None = None,
) -> RouteTable:
    """The table a router needs: ready, non-draining instances grouped by version.

    Versions that have ready instances but no weight are included with weight 0: the router
    never chooses them for a new request while a weighted version can serve, but retries on
    them when every backend of the chosen version refuses connections. When no weighted
    version has a ready instance at all (the new version crashed right after the switch),
    the warm versions are promoted to equal weights: users are served by the old version
    during the seconds it takes to decide the rollback, instead of getting errors.
    ``stable_version`` and ``retry`` are passed on: the router answers a canary's failed
    idempotent requests from the stable version (``core.retry``).
    """
    by_version: dict[str, list[InstanceObservation]] = {}
    for inst in instances:
        if inst.ready and inst.state == "running" and inst.instance_id not in draining:
            by_version.setdefault(inst.version, []).append(inst)
    versions = sorted(set(by_version) | {v for v, w in weights.items() if w > 0})
    pools = tuple(
        Pool(
            version=v,
            weight=max(0, weights.get(v, 0)),
            backends=tuple(i.backend for i in sorted(by_version.get(v, []), key=_order)),
        )
        for v in versions
    )
    if not any(p.weight > 0 and p.backends for p in pools):
        # Never promote the preview version: it has not been verified yet.
        pools = tuple(
            Pool(p.version, 1, p.backends) if p.backends and p.version != preview_version else p
            for p in pools
        )
    preview = tuple(
        i.backend for i in sorted(by_version.get(preview_version or "", []), key=_order)
    )
    return RouteTable(
        pools=pools,
        preview=preview,
        preview_version=preview_version,
        header_route=header_route,
        stable_version=stable_version,
        retry=retry if retry is not None else RetryPolicy(),
    )


def _order(inst: InstanceObservation) -> str:
    return inst.instance_id


def window(
    samples: Sequence[tuple[float, VersionCounters]], now: float, seconds: float
) -> TrafficWindow | None:
    """Requests and errors over the last `seconds`, from cumulative snapshots (oldest first).

    Uses the newest snapshot at or before the window start as the baseline, so a window is
    never shorter than asked while enough history exists; None when there is no history.
    The newest snapshot's total is passed on as the version's lifetime: the trigger spends
    its alpha per window's worth of it.
    """
    if not samples:
        return None
    start = now - seconds
    baseline = samples[0]
    for sample in samples:
        if sample[0] <= start:
            baseline = sample
        else:
            break
    latest = samples[-1]
    requests = latest[1].requests - baseline[1].requests
    errors = latest[1].errors - baseline[1].errors
    return TrafficWindow(
        requests=max(0, requests),
        errors=max(0, errors),
        seconds=latest[0] - baseline[0],
        lifetime_requests=latest[1].requests,
    )
