"""Per-version request accounting on the proxy's hot path, and its Prometheus rendering.

``VersionStats`` is deliberately a mutable object with slots rather than a frozen record:
it is updated once per request, so an update must be a handful of integer additions and one
``bisect``, never an allocation. Frozen ``VersionCounters`` snapshots are produced only when
somebody asks (the controller, the canary analysis, a Prometheus scrape).

Accounting rules (the analysis depends on them):

* a request is counted once, when it ends, against the version that finally served it (a
  request retried from v1 to v2 counts for v2 only);
* a response relayed from a backend counts in ``responses_<class>``; a failure produced by the
  router itself (503 no backend, 502 upstream failed, 504 upstream timeout, a response cut
  short) counts in ``proxy_errors`` only, so ``requests == sum(responses) + proxy_errors``;
* a request with no eligible pool is counted under the version ``NO_VERSION`` (``"-"``);
* every counted request feeds the latency histogram, the sum and the recent-sample reservoir;
* a request abandoned by its client before it ended is not counted (it has no outcome);
* exception to the first rule, so that the judges see exactly what a canary did: when a
  version other than the stable one fails an attempt (5xx, a dropped or refused
  connection) and the request is retried on stable (``core.retry``), the failed attempt is
  counted for that version as what it was (a 5xx response or a proxy error) *and* the retry
  is counted for stable; ``retried`` counts such attempts on the failing version, and
  ``retry_denied`` the retryable ones the budget refused (those reached the user). The sum
  of ``requests`` over versions is then user requests plus retried attempts.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from conveyor.core.model import VersionCounters

NO_VERSION = "-"
"""Version label for requests that found no eligible pool (answered 503 by the router)."""

LATENCY_BUCKETS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
"""Upper bounds (seconds) of the latency histogram, Prometheus' default buckets."""

DEFAULT_SAMPLES = 2048


class VersionStats:
    """Live counters of one version of one route; mutated in place by the proxy."""

    __slots__ = (
        "buckets",
        "classes",
        "in_flight",
        "latency_sum",
        "proxy_errors",
        "requests",
        "retried",
        "retry_denied",
        "samples",
        "version",
    )

    def __init__(self, version: str, sample_size: int = DEFAULT_SAMPLES) -> None:
        self.version = version
        self.requests = 0
        self.classes = [0] * 10  # index = status // 100
        self.proxy_errors = 0
        self.latency_sum = 0.0
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # last one is +Inf
        self.samples: deque[float] = deque(maxlen=sample_size)
        self.in_flight = 0
        self.retried = 0
        self.retry_denied = 0

    def observe(self, status: int, latency: float) -> None:
        """A response relayed from a backend, ``latency`` seconds after the request arrived."""
        self.requests += 1
        self.classes[status // 100] += 1
        self.latency_sum += latency
        self.buckets[bisect_left(LATENCY_BUCKETS, latency)] += 1
        self.samples.append(latency)

    def fail(self, latency: float) -> None:
        """A request the router itself failed (no backend, upstream error, timeout)."""
        self.requests += 1
        self.proxy_errors += 1
        self.latency_sum += latency
        self.buckets[bisect_left(LATENCY_BUCKETS, latency)] += 1
        self.samples.append(latency)

    def snapshot(self) -> VersionCounters:
        cumulative: list[tuple[float, int]] = []
        running = 0
        for bound, count in zip(LATENCY_BUCKETS, self.buckets, strict=False):
            running += count
            cumulative.append((bound, running))
        cumulative.append((float("inf"), running + self.buckets[-1]))
        classes = self.classes
        return VersionCounters(
            requests=self.requests,
            responses_2xx=classes[2],
            responses_3xx=classes[3],
            responses_4xx=classes[4],
            # Statuses >= 600 are not HTTP; count them with the server errors they signal.
            responses_5xx=sum(classes[5:]),
            proxy_errors=self.proxy_errors,
            latency_sum=self.latency_sum,
            latency_buckets=tuple(cumulative),
            retried=self.retried,
            retries_denied=self.retry_denied,
        )


@dataclass(frozen=True)
class SeriesSnapshot:
    """One version of one route at a point in time, as the exposition format needs it."""

    service: str
    env: str
    version: str
    counters: VersionCounters
    in_flight: int


_FAMILIES = (
    ("conveyor_router_requests_total", "counter", "Requests that ended, per version."),
    ("conveyor_router_responses_total", "counter", "Responses relayed from backends."),
    (
        "conveyor_router_proxy_errors_total",
        "counter",
        "Requests failed by the router itself (no backend, upstream error or timeout).",
    ),
    (
        "conveyor_router_request_duration_seconds",
        "histogram",
        "Time from a complete request to the end of its response.",
    ),
    ("conveyor_router_in_flight", "gauge", "Requests currently being proxied."),
    (
        "conveyor_router_retries_total",
        "counter",
        "Failed attempts of this version (5xx, dropped or refused) answered by stable instead.",
    ),
    (
        "conveyor_router_retry_budget_exhausted_total",
        "counter",
        "Retryable failures of this version not retried because the retry budget was spent.",
    ),
)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _format_bound(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


def render_prometheus(series: Iterable[SeriesSnapshot]) -> str:
    """Prometheus text exposition (version 0.0.4) of every series, grouped by family."""
    rows = list(series)
    lines: dict[str, list[str]] = {name: [] for name, _, _ in _FAMILIES}
    for row in rows:
        labels = (
            f'service="{_escape(row.service)}",env="{_escape(row.env)}",'
            f'version="{_escape(row.version)}"'
        )
        c = row.counters
        lines["conveyor_router_requests_total"].append(
            f"conveyor_router_requests_total{{{labels}}} {c.requests}"
        )
        for code_class, value in (
            ("2xx", c.responses_2xx),
            ("3xx", c.responses_3xx),
            ("4xx", c.responses_4xx),
            ("5xx", c.responses_5xx),
        ):
            lines["conveyor_router_responses_total"].append(
                f'conveyor_router_responses_total{{{labels},code_class="{code_class}"}} {value}'
            )
        lines["conveyor_router_proxy_errors_total"].append(
            f"conveyor_router_proxy_errors_total{{{labels}}} {c.proxy_errors}"
        )
        family = lines["conveyor_router_request_duration_seconds"]
        for bound, count in c.latency_buckets:
            family.append(
                f"conveyor_router_request_duration_seconds_bucket"
                f'{{{labels},le="{_format_bound(bound)}"}} {count}'
            )
        family.append(f"conveyor_router_request_duration_seconds_sum{{{labels}}} {c.latency_sum!r}")
        family.append(f"conveyor_router_request_duration_seconds_count{{{labels}}} {c.requests}")
        lines["conveyor_router_in_flight"].append(
            f"conveyor_router_in_flight{{{labels}}} {row.in_flight}"
        )
        lines["conveyor_router_retries_total"].append(
            f"conveyor_router_retries_total{{{labels}}} {c.retried}"
        )
        lines["conveyor_router_retry_budget_exhausted_total"].append(
            f"conveyor_router_retry_budget_exhausted_total{{{labels}}} {c.retries_denied}"
        )
    out: list[str] = []
    for name, kind, help_text in _FAMILIES:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")
        out.extend(lines[name])
    return "\n".join(out) + "\n"
