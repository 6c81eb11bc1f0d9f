"""The SLO alerts as Prometheus rules: recording rules per window, alerting rules per severity.

The same arithmetic as ``core/slo.py``, written for Prometheus to evaluate (``conveyor slo
rules``): one recording rule per SLO, environment and window giving the error ratio
(``conveyor:slo_error_ratio:rate<window>``), then a ``ConveyorSLOBurnPage`` and a
``ConveyorSLOBurnTicket`` alert whose expressions are the workbook's multiwindow
conditions. Labels ``service``, ``env``, ``slo`` and ``severity`` are what the Alertmanager
receiver reads back (``application/insight.py``), so an alert Prometheus raises becomes an
incident against the release running at the time.

Events come from the built-in router's metrics on Conveyor's ``/metrics`` (requests, 5xx
answers, the router's own failures, the latency histogram), or from the user's PromQL with
``$window`` replaced by each window. Pure: a dict out, the caller writes YAML.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from conveyor.core.slo import RULES, WINDOWS, window_name


@dataclass(frozen=True)
class SloSpec:
    """What the rules need of one SLO in one environment."""

    service: str
    env: str
    name: str
    objective: float
    indicator: str  # "availability" | "latency"
    threshold: float | None = None
    bad_query: str | None = None  # source: prometheus, with $window
    total_query: str | None = None


RECORD = "conveyor:slo_error_ratio:rate{window}"


def _selector(spec: SloSpec, extra: str = "") -> str:
    return f'{{service="{spec.service}",env="{spec.env}"{extra}}}'


def ratio_expr(spec: SloSpec, window: str) -> str:
    """Bad events over all events in ``window``, as PromQL."""
    if spec.bad_query is not None and spec.total_query is not None:
        bad = spec.bad_query.replace("$window", window)
        total = spec.total_query.replace("$window", window)
        return f"({bad})\n/\n({total})"
    sel = _selector(spec)
    total = f"sum(rate(conveyor_router_requests_total{sel}[{window}]))"
    if spec.indicator == "latency":
        assert spec.threshold is not None
        bucket = _selector(spec, ',le="' + repr(float(spec.threshold)) + '"')
        fast = f"sum(rate(conveyor_router_request_duration_seconds_bucket{bucket}[{window}]))"
        bad = f"{total} - {fast}"
    else:
        errors = _selector(spec, ',code_class="5xx"')
        bad = (
            f"sum(rate(conveyor_router_responses_total{errors}[{window}]))"
            f" + sum(rate(conveyor_router_proxy_errors_total{sel}[{window}]))"
        )
    return f"({bad})\n/\n{total}"


def rule_groups(specs: Iterable[SloSpec]) -> dict[str, Any]:
    """A Prometheus rule file: one group per SLO and environment."""
    groups = []
    for spec in specs:
        labels = {"service": spec.service, "env": spec.env, "slo": spec.name}
        matcher = ",".join(f'{k}="{v}"' for k, v in labels.items())
        budget = 1.0 - spec.objective
        rules: list[dict[str, Any]] = [
            {
                "record": RECORD.format(window=window_name(w)),
                "expr": ratio_expr(spec, window_name(w)),
                "labels": dict(labels),
            }
            for w in WINDOWS
        ]
        for severity in ("page", "ticket"):
            clauses = []
            for rule in RULES:
                if rule.severity != severity:
                    continue
                limit = f"{rule.factor * budget:.10g}"
                long = RECORD.format(window=window_name(rule.long))
                short = RECORD.format(window=window_name(rule.short))
                clauses.append(
                    f"({long}{{{matcher}}} > {limit} and {short}{{{matcher}}} > {limit})"
                )
            rules.append(
                {
                    "alert": f"ConveyorSLOBurn{severity.title()}",
                    "expr": "\nor\n".join(clauses),
                    "labels": {**labels, "severity": severity},
                    "annotations": {
                        "summary": f"{spec.service} burns its {spec.name} error budget "
                        f"in {spec.env} too fast ({severity})",
                        "description": f"Objective {spec.objective * 100:g}%; the SRE "
                        "workbook's multiwindow burn-rate alert "
                        + ", ".join(
                            r.name + f" at {r.factor:g}x" for r in RULES if r.severity == severity
                        )
                        + ".",
                    },
                }
            )
        groups.append(
            {"name": f"conveyor-slo-{spec.service}-{spec.env}-{spec.name}", "rules": rules}
        )
    return {"groups": groups}
