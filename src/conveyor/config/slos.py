"""Service level objectives in conveyor.yaml (``services.<name>.slos``).

An SLO says what share of requests must be good over a period (28 or 30 days): available
(not a 5xx, not failed by the router) or fast (answered within a latency threshold). The
events are counted by the built-in router's per-version counters, or by two PromQL
expressions the user writes (bad and total, each with ``$window`` where the range goes).
Conveyor evaluates the SRE workbook's multiwindow, multi-burn-rate alerts itself
(``core/slo.py``) and writes the same alerts as Prometheus rules (``conveyor slo rules``).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import (
    BeforeValidator,
    Field,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from conveyor.config.durations import PositiveDuration
from conveyor.config.fields import ConfigModel, Slug
from conveyor.config.suggest import invalid
from conveyor.core.slo_rules import SloSpec

ROUTER_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""The built-in router's latency buckets (traffic/builtin/metrics.py): the thresholds a
latency SLO on router counters can count exactly."""
_OBJECTIVE = re.compile(r"(\d{1,3}(?:\.\d{1,6})?)\s*%")
MAX_QUERY = 4000


def _objective(value: object) -> float:
    hint = "write the share of good events as a percentage below 100%, e.g. 99.9%"
    if isinstance(value, str):
        found = _OBJECTIVE.fullmatch(value.strip())
        if found is not None:
            fraction = float(found.group(1)) / 100
            if 0 < fraction < 1:
                return fraction
    elif isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < 1:
        return float(value)
    raise invalid(
        f"an objective is a percentage between 0% and 100% (exclusive), got {value!r}", hint
    )


class PrometheusIndicator(ConfigModel):
    """Two PromQL expressions counting events per second over ``$window``."""

    address: str = Field(
        "http://127.0.0.1:9090",
        max_length=2000,
        pattern=r"^https?://[^\s]+$",
        description="The Prometheus server Conveyor queries to evaluate this SLO itself.",
    )
    bad: str = Field(
        max_length=MAX_QUERY,
        description="Rate of bad events over $window, e.g. "
        'sum(rate(http_requests_total{job="shop",code=~"5.."}[$window])).',
    )
    total: str = Field(
        max_length=MAX_QUERY,
        description="Rate of all events over $window, e.g. "
        'sum(rate(http_requests_total{job="shop"}[$window])).',
    )

    @model_validator(mode="after")
    def _windowed(self) -> PrometheusIndicator:
        for name, query in (("bad", self.bad), ("total", self.total)):
            if "$window" not in query:
                raise invalid(
                    f"the {name} query has no $window: Conveyor puts each alert window "
                    "(5m, 1h, ...) there",
                    "write the range as [$window], e.g. sum(rate(x_total[$window]))",
                )
        return self


class SloConfig(ConfigModel):
    """One objective of a service, evaluated in the environments it names."""

    name: Slug = Field(description="Names the SLO in alerts, rules and `conveyor slo status`.")
    objective: Annotated[
        float,
        BeforeValidator(_objective),
        WithJsonSchema({"anyOf": [{"type": "number"}, {"type": "string"}], "examples": ["99.9%"]}),
    ] = Field(description="The share of good events over the period, e.g. 99.9%.")
    period: Literal["28d", "30d"] = Field("28d", description="The error budget's window.")
    source: Literal["router", "prometheus"] = Field(
        "router", description="Who counts the events: the built-in router, or Prometheus."
    )
    prometheus: PrometheusIndicator | None = Field(
        None, description="With source: prometheus, the bad and total queries."
    )
    indicator: Literal["availability", "latency"] = Field(
        "availability",
        description="availability: bad = 5xx answers and requests the router failed; latency: "
        "bad = requests slower than `threshold`.",
    )
    threshold: PositiveDuration | None = Field(
        None,
        description="For indicator: latency, the latency a good request stays within "
        "(with router counters: one of the router's buckets, e.g. 250ms).",
    )
    environments: list[Slug] = Field(
        default_factory=lambda: ["production"],
        description="Where the SLO applies (and its alerts are evaluated).",
    )

    @model_validator(mode="after")
    def _consistent(self) -> SloConfig:
        if self.indicator == "latency" and self.threshold is None:
            raise invalid(
                f"SLO '{self.name}' counts latency but names no threshold",
                "add threshold: 250ms (the latency a good request stays within)",
            )
        if self.indicator == "availability" and self.threshold is not None:
            raise invalid(
                f"SLO '{self.name}' has a threshold but counts availability",
                "remove threshold, or set indicator: latency",
            )
        if self.source == "prometheus" and self.prometheus is None:
            raise invalid(
                f"SLO '{self.name}' reads Prometheus but has no queries",
                "add prometheus: {bad: '...[$window]...', total: '...[$window]...'}",
            )
        if self.source == "router" and self.prometheus is not None:
            raise invalid(
                f"SLO '{self.name}' has Prometheus queries but source: router",
                "set source: prometheus, or remove the prometheus: block",
            )
        return self

    @field_validator("threshold")
    @classmethod
    def _a_router_bucket(cls, threshold: float | None, info: ValidationInfo) -> float | None:
        router = info.data.get("source") == "router"
        if router and threshold is not None and threshold not in ROUTER_BUCKETS:
            shown = ", ".join(f"{b * 1000:g}ms" for b in ROUTER_BUCKETS)
            raise invalid(
                f"the router counts latency in buckets; {threshold * 1000:g}ms is not one of them",
                f"pick one of {shown}, or count with Prometheus (source: prometheus)",
            )
        return threshold

    @property
    def period_seconds(self) -> float:
        return 28 * 86400.0 if self.period == "28d" else 30 * 86400.0

    def spec(self, service: str, env: str) -> SloSpec:
        """What the Prometheus rules need of this SLO in ``env`` (``core/slo_rules.py``)."""
        return SloSpec(
            service=service,
            env=env,
            name=self.name,
            objective=self.objective,
            indicator=self.indicator,
            threshold=self.threshold,
            bad_query=self.prometheus.bad if self.prometheus else None,
            total_query=self.prometheus.total if self.prometheus else None,
        )
