"""The ``prometheus`` provider: one instant query against a Prometheus server's HTTP API.

Result shapes map to what a condition sees as ``result``:

* a scalar, or a vector with one series -> that number;
* a vector with several series -> the list of their numbers (``result[0]``, ``max(result)``);
* an **empty vector -> no data -> inconclusive**. A canary that received no traffic in the
  query's range is not a failed canary; treating it as one is how Flagger's "no values found"
  aborted healthy low-traffic releases;
* a matrix (range query) or a string -> an error: conditions judge one value per series.

Connection failures, HTTP errors and Prometheus' own query errors (``bad_data`` for a PromQL
syntax error) become error measurements carrying Prometheus' message, so the user sees why.
"""

from __future__ import annotations

from typing import Any

import httpx

from conveyor.analysis.base import AnalysisContext, failed_to_measure, judged
from conveyor.core.analysis import Measurement, MetricSpec


class PrometheusProvider:
    kind = "prometheus"

    async def measure(self, spec: MetricSpec, context: AnalysisContext) -> Measurement:
        started = context.clock()
        address = str(spec.config.get("address", "")).rstrip("/")
        query = str(spec.config.get("query", ""))
        evidence: dict[str, Any] = {"address": address, "query": query}
        try:
            async with httpx.AsyncClient(timeout=spec.timeout) as client:
                response = await client.get(f"{address}/api/v1/query", params={"query": query})
        except httpx.HTTPError as error:
            reason = str(error) or type(error).__name__
            return failed_to_measure(
                context, started, f"prometheus at {address}: {reason}", evidence
            )
        evidence["status"] = response.status_code
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            message = f"prometheus answered {response.status_code} without a JSON body"
            return failed_to_measure(context, started, message, evidence)
        if body.get("status") != "success":
            kind, reason = body.get("errorType", "error"), body.get("error", "unknown error")
            return failed_to_measure(context, started, f"prometheus {kind}: {reason}", evidence)
        try:
            value, series = _value(body.get("data"))
        except ValueError as problem:
            return failed_to_measure(context, started, f"prometheus: {problem}", evidence)
        evidence["series"] = series
        return judged(spec, value, context, started, evidence=evidence)


def _value(data: object) -> tuple[float | list[float] | None, int]:
    """The number(s) of an instant-query result, and how many series it had."""
    if not isinstance(data, dict):
        raise ValueError("the answer has no data")
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar":
        return _number(result), 1
    if kind == "vector" and isinstance(result, list):
        numbers = [_number(series.get("value")) for series in result if isinstance(series, dict)]
        if not numbers:
            return None, 0
        return (numbers[0] if len(numbers) == 1 else numbers), len(numbers)
    if kind == "matrix":
        raise ValueError(
            "the query returned a range (matrix); use an instant query, e.g. rate(x[1m])"
        )
    raise ValueError(f"unsupported result type {kind!r}")


def _number(sample: object) -> float:
    """Prometheus encodes a sample as [timestamp, "value"], the value as a string."""
    if not (isinstance(sample, list) and len(sample) == 2):
        raise ValueError(f"unreadable sample {sample!r}")
    try:
        number = float(sample[1])
    except (TypeError, ValueError):
        raise ValueError(f"unreadable sample value {sample[1]!r}") from None
    return number
