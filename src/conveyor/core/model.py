"""Records shared by the core, the runtime, the router and the controller.

They are frozen dataclasses: plain data that crosses layer boundaries without carrying
behaviour or I/O. Times are seconds as floats from an injected clock (``time.time()`` in
the shell, a fake in tests); nothing in ``core`` reads the clock itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from conveyor.core.retry import RetryPolicy

# --- traffic -------------------------------------------------------------------------


@dataclass(frozen=True)
class Backend:
    """One instance as the router sees it: where to send bytes."""

    instance_id: str
    host: str
    port: int

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Pool:
    """All ready instances of one version, and the share of traffic that version gets.

    ``version`` is the template key of the instances (see ``core.release.template_key``):
    two releases that run the same artifact with the same config share it, which is what
    makes a rollback to a still-warm version a pure traffic switch.
    """

    version: str
    weight: int
    backends: tuple[Backend, ...] = ()


@dataclass(frozen=True)
class HeaderRoute:
    """Requests whose header `name` equals `value` go to `version`, whatever the weights."""

    name: str
    value: str
    version: str


@dataclass(frozen=True)
class RouteTable:
    """What a router must do for one service in one environment.

    The router chooses a pool per request with probability weight / sum(weights) among the
    pools that have at least one backend (a pool with no live backend is skipped, so users
    fall back to another version rather than getting errors), then an instance of that pool
    round-robin. ``preview`` backends are served only on the preview listener (blue-green).
    """

    pools: tuple[Pool, ...] = ()
    preview: tuple[Backend, ...] = ()
    preview_version: str | None = None
    header_route: HeaderRoute | None = None  # only honoured while that version has backends
    stable_version: str | None = None
    """The known-good version: a canary's failed idempotent requests are retried on it."""
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    """Which failures of a version other than ``stable_version`` are retried on it, and the
    budget that bounds those retries (``core.retry``)."""
    epoch: int = 0  # lease epoch of the pushing server; routers refuse a lower one than seen


@dataclass(frozen=True)
class VersionCounters:
    """Cumulative per-version counters kept by a router since it started.

    Rates are differences of two snapshots; ``errors`` counts 5xx responses plus requests
    the router itself failed (no backend, upstream reset), which users also saw as errors.
    """

    requests: int = 0
    responses_2xx: int = 0
    responses_3xx: int = 0
    responses_4xx: int = 0
    responses_5xx: int = 0
    proxy_errors: int = 0
    latency_sum: float = 0.0
    latency_buckets: tuple[tuple[float, int], ...] = ()  # cumulative (le, count), Prometheus-style
    retried: int = 0
    """Failed attempts of this version that were answered by the stable version instead
    (already counted above, as the 5xx or proxy error they were)."""
    retries_denied: int = 0
    """Retryable failures of this version that the retry budget refused: users saw them."""

    @property
    def errors(self) -> int:
        return self.responses_5xx + self.proxy_errors

    def within(self, seconds: float) -> int:
        """Requests answered within ``seconds`` (a bucket bound; 0 if there is no such bucket)."""
        for bound, count in self.latency_buckets:
            if bound == seconds:
                return count
        return 0


def sum_counters(counters: list[VersionCounters]) -> VersionCounters:
    """Several versions' counters as one (an SLO counts every version of a service)."""
    buckets: dict[float, int] = {}
    for c in counters:
        for bound, count in c.latency_buckets:
            buckets[bound] = buckets.get(bound, 0) + count
    return VersionCounters(
        requests=sum(c.requests for c in counters),
        responses_2xx=sum(c.responses_2xx for c in counters),
        responses_3xx=sum(c.responses_3xx for c in counters),
        responses_4xx=sum(c.responses_4xx for c in counters),
        responses_5xx=sum(c.responses_5xx for c in counters),
        proxy_errors=sum(c.proxy_errors for c in counters),
        latency_sum=sum(c.latency_sum for c in counters),
        latency_buckets=tuple(sorted(buckets.items())),
    )


# --- runtime ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeSpec:
    """An HTTP GET probe, Kubernetes semantics: thresholds count consecutive results."""

    path: str
    timeout: float = 2.0
    period: float = 1.0
    initial_delay: float = 0.0
    failure_threshold: int = 3
    success_threshold: int = 1


@dataclass(frozen=True)
class SecretRef:
    """Where a secret config value is read when an instance starts: never the value itself.

    ``source`` is ``env`` (a variable of the server's own environment) or ``file`` (an
    absolute path the server can read). Plans, instance records, events and API answers
    carry this reference; only the runtime, at the moment it starts a process, reads what it
    points to. So a value never lands in the store, and rotating it needs no new release.
    """

    source: Literal["env", "file"]
    name: str

    def to_json(self) -> dict[str, str]:
        return {self.source: self.name}

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> SecretRef:
        if len(data) != 1:
            raise ValueError(f"a secret reference names one source, got {dict(data)!r}")
        [(source, name)] = data.items()
        if source not in ("env", "file") or not isinstance(name, str) or not name:
            raise ValueError(f"not a secret reference: {dict(data)!r}")
        return cls("env" if source == "env" else "file", name)

    def __str__(self) -> str:
        where = f"${self.name}" if self.source == "env" else self.name
        return f"secret {self.source} {where}"


@dataclass(frozen=True)
class InstanceSpec:
    """Everything the runtime needs to start (and restart) one instance of a version."""

    instance_id: str
    project: str
    service: str
    env: str
    version: str  # template key, see Pool.version
    revision: int
    artifact_digest: str
    artifact_dir: Path
    command: str | tuple[str, ...]  # a string runs via /bin/sh -c; a tuple is exec'd directly
    environment: Mapping[str, str]  # config and CONVEYOR_* variables; the runtime adds the port
    port_env: str = "PORT"
    readiness: ProbeSpec | None = None
    liveness: ProbeSpec | None = None
    stop_grace: float = 10.0
    secrets: Mapping[str, SecretRef] = field(default_factory=dict)  # resolved at each start
    run_as: str | None = None  # "user[:group]" it runs as; None: the server's own user
    epoch: int = 0  # the lease epoch of the server starting it (core/leases.py); 0: unfenced


InstanceState = Literal["starting", "running", "backoff", "stopping", "stopped", "failed"]


@dataclass(frozen=True)
class ProbeResult:
    at: float
    ok: bool
    detail: str  # "200 OK", "503 Service Unavailable", "connection refused", "timeout after 2s"


@dataclass(frozen=True)
class InstanceObservation:
    """What the runtime knows about one instance right now."""

    instance_id: str
    service: str
    env: str
    version: str
    revision: int
    host: str
    port: int
    pid: int | None
    state: InstanceState
    ready: bool
    restarts: int
    started_at: float
    last_exit_code: int | None = None
    last_probe: ProbeResult | None = None
    consecutive_probe_failures: int = 0
    ever_ready: bool = False
    ready_since: float | None = None  # when it last became ready; None if the runtime cannot say
    log_path: Path | None = None
    recent_probes: tuple[ProbeResult, ...] = field(default=(), compare=False)

    @property
    def backend(self) -> Backend:
        return Backend(self.instance_id, self.host, self.port)
