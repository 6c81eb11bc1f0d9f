"""``analysis:`` templates in conveyor.yaml, and how they become ``core.analysis.MetricSpec``.

A template is written once and filled in per release: ``{{args.canary_version}}`` in a
Prometheus query becomes the version being judged. Substitution is strict — a placeholder that
names no declared argument is a load-time error, and a declared argument the controller does
not supply is an error at release time — because a query silently left with ``{{...}}`` in it
returns no data, which reads as "inconclusive" forever.

Conditions are compiled when the file is loaded, so ``result = 1`` is reported with its line
and a caret before any release depends on it. Placeholders inside conditions are checked by
compiling with a stand-in identifier, which is valid both as a value and inside quotes.

Template-level settings (``interval``, ``failure_limit``...) are defaults for the metrics that
do not set their own, as in the product brief's example. Two defaults depend on the query,
because the builtin provider measures *windows* of router counters: a window query waits one
interval before its first measurement (its first window would otherwise be empty), and a
comparison tolerates inconclusive measurements until its last one (evidence accumulates;
"not enough traffic yet" early on is expected, not a verdict).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    model_validator,
)
from pydantic_core import InitErrorDetails

from conveyor.config.durations import Count, Duration, Percentage, PositiveDuration
from conveyor.config.suggest import choose_hint, closest, describe, invalid
from conveyor.core.analysis import (
    DEFAULT_CONSECUTIVE_ERROR_LIMIT,
    UNLIMITED,
    AnalysisTemplate,
    MetricSpec,
    placeholders,
)
from conveyor.core.analysis import stand_in as fill_stand_in
from conveyor.core.expressions import compile_expression
from conveyor.errors import ExpressionError

NAME_PATTERN = r"^[a-z0-9][a-z0-9-]*$"
ARG_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]*$"

JUDGED_MIN_SAMPLE = 20
"""Default ``min_sample`` of builtin error-rate and latency windows: one failed request out of
three is not a 33% error rate worth aborting for, it is too little traffic to tell."""
WINDOW_QUERIES = ("error_rate", "request_rate", "latency_p50", "latency_p95", "latency_p99")
COMPARE_QUERIES = ("compare_error_rate", "compare_latency")
BuiltinQuery = Literal[
    "error_rate",
    "request_rate",
    "latency_p50",
    "latency_p95",
    "latency_p99",
    "compare_error_rate",
    "compare_latency",
]
LATENCY_DEFAULTS: Mapping[str, float | int] = {
    "quantile": 0.95,
    "max_ratio": 1.2,
    "min_delta": 0.025,
    "alpha": 0.01,
    "beta": 0.05,
    "min_samples": 10,
}
"""compare_latency: fails only over stable's p95 by 20% *and* 25 ms, with evidence; 4 in
10,000 simulated healthy canaries failed (docs/canary.md). ``min_samples`` is a floor for
cold starts, not the evidence rule: 300 ms slower fails on its first look with ten samples."""
ERROR_RATE_DEFAULTS: Mapping[str, float | int] = {
    "max_delta": 0.01,
    "alpha": 0.05,
    "beta": 0.05,
    "min_requests": 1,
}
"""compare_error_rate: fails when sure the canary is over 1 point worse than stable, passes
when sure it is not; 4 in 10,000 simulated healthy canaries failed (docs/canary.md). No
minimum count: the posterior decides when the evidence suffices, with alpha spent per look."""


# -- field types ----------------------------------------------------------------------------


def _metric_name(value: str) -> str:
    if not re.fullmatch(NAME_PATTERN, value):
        raise invalid(
            f"{describe(value)} is not a valid metric name",
            "use lowercase letters, digits and '-', e.g. error-rate",
        )
    return value


def _arg_name(value: str) -> str:
    if not re.fullmatch(ARG_PATTERN, value):
        raise invalid(
            f"{describe(value)} is not a valid argument name",
            "use letters, digits, '_' and '-', starting with a letter, e.g. canary_version",
        )
    return value


def _condition(value: str) -> str:
    stand_in = fill_stand_in(value, "__arg__")
    try:
        expression = compile_expression(stand_in)
    except ExpressionError as error:
        raise invalid(f"{error.reason} in {describe(value)}", error.hint) from None
    unknown = sorted(expression.names - {"result", "__arg__"})
    if unknown:
        hint = "did you mean 'result'? " if closest(unknown[0], ["result"]) else ""
        raise invalid(
            f"condition {describe(value)} uses unknown name '{unknown[0]}'",
            hint + "conditions see the measured value as 'result', e.g. result > 0.01, "
            "and template arguments as {{args.NAME}}",
        )
    return value


def _url(value: str) -> str:
    if not re.match(r"^https?://[^\s/]+", value):
        raise invalid(f"{describe(value)} is not an http(s) URL", "e.g. http://127.0.0.1:9090")
    return value


def _argv(value: object) -> str | list[str]:
    hint = 'write a shell command such as "./check.sh" or an argv list such as [./check.sh, prod]'
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return list(value)
    raise invalid(
        f"expected a command (a string or a list of strings), got {describe(value)}", hint
    )


MetricName = Annotated[str, AfterValidator(_metric_name)]
ArgName = Annotated[str, AfterValidator(_arg_name)]
Condition = Annotated[str, AfterValidator(_condition)]
Url = Annotated[str, AfterValidator(_url)]
Limit = Annotated[int, Field(ge=-1)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- metrics --------------------------------------------------------------------------------


class _Settings(_Model):
    """What a template may set for all its metrics and each metric may override."""

    interval: PositiveDuration | None = Field(
        None, description="Time between measurements; omit to measure once."
    )
    count: Count | None = Field(
        None, ge=1, description="Measurements to take; omit to measure until the step ends."
    )
    initial_delay: Duration | None = Field(
        None,
        description="Wait before the first measurement (builtin window queries default to "
        "one interval, so the first window is not empty).",
    )
    failure_limit: Limit | None = Field(
        None, description="Failed measurements tolerated before the metric fails (-1: any)."
    )
    inconclusive_limit: Limit | None = Field(
        None,
        description="Inconclusive measurements tolerated (-1: any); builtin comparisons "
        "default to all but the last.",
    )
    consecutive_error_limit: Limit | None = Field(
        None, description="Errors in a row tolerated before the metric errors (default 4)."
    )
    min_sample: Count | None = Field(
        None,
        ge=0,
        description="Fewer requests or samples than this make a measurement inconclusive, "
        "never failed (builtin error_rate and latency queries default to 20).",
    )
    timeout: PositiveDuration | None = Field(
        None, description="A measurement slower than this is an error (default 30s)."
    )


class _Metric(_Settings):
    name: MetricName = Field(description="Metric name, unique in the template.")
    success_condition: Condition | None = Field(
        None, description="Expression on `result` that must hold, e.g. result <= 0.01."
    )
    failure_condition: Condition | None = Field(
        None, description="Expression on `result` that fails the measurement, e.g. result > 0.01."
    )

    def provider_config(self) -> dict[str, Any]:
        raise NotImplementedError

    def text_fields(self) -> Iterator[tuple[tuple[str | int, ...], str]]:
        """Every string a placeholder may appear in, with its location in this model."""
        for key in ("success_condition", "failure_condition"):
            text = getattr(self, key)
            if text is not None:
                yield (key,), text


class ComparisonConfig(_Model):
    quantile: float | None = Field(
        None, gt=0, lt=1, description="compare_latency: latency quantile compared (0.95)."
    )
    max_ratio: float | None = Field(
        None,
        ge=1,
        description="compare_latency: canary/stable quantile ratio tolerated (1.2); the canary "
        "fails only when over both this and min_delta.",
    )
    min_delta: Duration | None = Field(
        None,
        description="compare_latency: quantile increase always tolerated, e.g. 25ms (0.025): "
        "fresh processes differ by milliseconds no user notices.",
    )
    min_samples: Count | None = Field(
        None,
        ge=1,
        description="compare_latency: floor of samples on each side before judging (10); "
        "the evidence rule decides when they suffice.",
    )
    max_delta: Percentage | None = Field(
        None, description="compare_error_rate: error-rate increase tolerated, e.g. 1% (0.01)."
    )
    beta: float | None = Field(
        None,
        gt=0,
        lt=0.5,
        description="Pass when P(canary worse beyond the tolerance) is at most this (0.05).",
    )
    min_requests: Count | None = Field(
        None,
        ge=1,
        description="compare_error_rate: floor of requests on each side before judging (1); "
        "the evidence rule decides when they suffice.",
    )
    alpha: float | None = Field(
        None,
        gt=0,
        lt=0.5,
        description="False-alarm budget (errors 0.05, latency 0.01), spent over the looks: "
        "look j (the j-th doubling of the canary's traffic) fails at P(worse) >= "
        "1 - alpha * 6 / (pi^2 j^2).",
    )


class BuiltinMetric(_Metric):
    provider: Literal["builtin"] = Field("builtin", description="Built-in router counters.")
    query: BuiltinQuery = Field(description="What to measure from the router's counters.")
    compare: ComparisonConfig | None = Field(
        None, description="Thresholds of compare_latency / compare_error_rate."
    )

    @model_validator(mode="after")
    def _comparison_fits_query(self) -> BuiltinMetric:
        if self.query in COMPARE_QUERIES:
            if self.success_condition or self.failure_condition:
                raise invalid(
                    f"{self.query} decides by statistics, not by conditions",
                    "remove success_condition/failure_condition; tune `compare:` instead",
                )
            wanted = LATENCY_DEFAULTS if self.query == "compare_latency" else ERROR_RATE_DEFAULTS
            given = self.compare.model_fields_set if self.compare else set()
            stray = sorted(given - set(wanted))
            if stray:
                raise invalid(
                    f"compare.{stray[0]} does not apply to {self.query}",
                    f"{self.query} takes: {', '.join(wanted)}",
                )
        elif self.compare is not None:
            raise invalid(
                f"`compare:` only applies to {' and '.join(COMPARE_QUERIES)}",
                "remove it, or use a compare_* query",
            )
        return self

    def provider_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"query": self.query}
        if self.query in COMPARE_QUERIES:
            wanted = LATENCY_DEFAULTS if self.query == "compare_latency" else ERROR_RATE_DEFAULTS
            given = self.compare.model_dump(exclude_none=True) if self.compare else {}
            config["compare"] = {key: given.get(key, default) for key, default in wanted.items()}
        return config


class PrometheusMetric(_Metric):
    provider: Literal["prometheus"] = Field(description="A Prometheus server's HTTP API.")
    address: Url = Field(description="Prometheus base URL, e.g. http://127.0.0.1:9090.")
    query: str = Field(min_length=1, description="PromQL instant query; {{args.X}} allowed.")

    def provider_config(self) -> dict[str, Any]:
        return {"address": self.address, "query": self.query}

    def text_fields(self) -> Iterator[tuple[tuple[str | int, ...], str]]:
        yield from super().text_fields()
        yield ("address",), self.address
        yield ("query",), self.query


class HttpMetric(_Metric):
    provider: Literal["http"] = Field(description="GET a URL and read a value from its JSON.")
    url: Url = Field(description="URL to GET; {{args.X}} allowed.")
    json_path: str | None = Field(
        None, description="Where the value is in the JSON body: $.a.b[0] or a.b.0."
    )
    headers: dict[str, str] = Field(default_factory=dict, description="Request headers.")

    def provider_config(self) -> dict[str, Any]:
        return {"url": self.url, "json_path": self.json_path, "headers": dict(self.headers)}

    def text_fields(self) -> Iterator[tuple[tuple[str | int, ...], str]]:
        yield from super().text_fields()
        yield ("url",), self.url
        for name, value in self.headers.items():
            yield ("headers", name), value


class CommandMetric(_Metric):
    provider: Literal["command"] = Field(
        description="Run a command: the last number it prints is the result; without a "
        "number, exit code 0 gives 1 and anything else 0. With no condition, exit 0 passes."
    )
    run: Annotated[str | list[str], AfterValidator(_argv)] = Field(
        description="A shell command (run with sh -c) or an argv list (run directly)."
    )

    def provider_config(self) -> dict[str, Any]:
        return {"run": self.run}

    def text_fields(self) -> Iterator[tuple[tuple[str | int, ...], str]]:
        yield from super().text_fields()
        if isinstance(self.run, str):
            yield ("run",), self.run
        else:
            for index, part in enumerate(self.run):
                yield ("run", index), part


def _provider_tag(value: object) -> str:
    if isinstance(value, dict):
        return str(value.get("provider", "builtin"))
    return str(getattr(value, "provider", "builtin"))


MetricConfig = Annotated[
    Annotated[BuiltinMetric, Tag("builtin")]
    | Annotated[PrometheusMetric, Tag("prometheus")]
    | Annotated[HttpMetric, Tag("http")]
    | Annotated[CommandMetric, Tag("command")],
    Discriminator(_provider_tag),
]


# -- templates ------------------------------------------------------------------------------


class AnalysisTemplateConfig(_Settings):
    """One named template under ``analysis:``: arguments, shared settings and metrics."""

    args: list[ArgName] = Field(
        default_factory=list, description="Argument names the template's {{args.X}} may use."
    )
    metrics: list[MetricConfig] = Field(min_length=1, description="The metrics to measure.")

    @model_validator(mode="after")
    def _consistent(self) -> AnalysisTemplateConfig:
        problems: list[InitErrorDetails] = []
        seen: set[str] = set()
        for index, metric in enumerate(self.metrics):
            where: tuple[str | int, ...] = ("metrics", index)
            if metric.name in seen:
                message = f"metric name '{metric.name}' is used twice"
                hint = "give each metric of a template its own name"
                problems.append(_problem((*where, "name"), metric.name, message, hint))
            seen.add(metric.name)
            for path, text in metric.text_fields():
                for placeholder, name in placeholders(text):
                    if name is None:
                        message = f"{placeholder} is not a placeholder Conveyor knows"
                        hint = "placeholders look like {{args.NAME}}"
                    elif name not in self.args:
                        message = f"{placeholder} names an argument the template does not declare"
                        hint = choose_hint(name, self.args, "args") + " (declare it under args:)"
                    else:
                        continue
                    problems.append(_problem(where + path, text, message, hint))
            count = self._pick(metric, "count")
            if count is not None and count > 1 and self._pick(metric, "interval") is None:
                problems.append(
                    _problem(
                        (*where, "count"),
                        count,
                        f"count {count} needs an interval between the measurements",
                        "add interval: 30s (to the metric or the template)",
                    )
                )
        if problems:
            raise ValidationError.from_exception_data("analysis template", problems)
        return self

    def _pick(self, metric: _Metric, key: str) -> Any:
        own = getattr(metric, key)
        return own if own is not None else getattr(self, key)

    def metric_specs(self, args: Mapping[str, str]) -> tuple[MetricSpec, ...]:
        """The template filled in for one release; raises if a used argument has no value."""
        return self.frozen().filled(args)

    def frozen(self) -> AnalysisTemplate:
        """The template as a release stores it: defaults resolved, placeholders unfilled."""
        return AnalysisTemplate(
            tuple(self.args), tuple(self._spec(metric) for metric in self.metrics)
        )

    def _spec(self, metric: _Metric) -> MetricSpec:
        interval = self._pick(metric, "interval")
        count = self._pick(metric, "count")
        query = getattr(metric, "query", None) if isinstance(metric, BuiltinMetric) else None
        initial_delay = self._pick(metric, "initial_delay")
        if initial_delay is None:
            initial_delay = interval if query in WINDOW_QUERIES and interval else 0.0
        inconclusive_limit = self._pick(metric, "inconclusive_limit")
        if inconclusive_limit is None:
            # A comparison is inconclusive until enough traffic arrives: tolerate that until
            # its last measurement, or for as long as it runs when it has no count (a
            # background run starts before the canary has any users).
            if query in COMPARE_QUERIES:
                inconclusive_limit = max(0, count - 1) if count else UNLIMITED
            else:
                inconclusive_limit = 0
        errors = self._pick(metric, "consecutive_error_limit")
        min_sample = JUDGED_MIN_SAMPLE if query in WINDOW_QUERIES and query != "request_rate" else 0
        return MetricSpec(
            name=metric.name,
            provider=_provider_tag(metric),
            config=metric.provider_config(),
            interval=interval,
            count=count,
            initial_delay=initial_delay,
            failure_limit=_or(self._pick(metric, "failure_limit"), 0),
            inconclusive_limit=inconclusive_limit,
            consecutive_error_limit=_or(errors, DEFAULT_CONSECUTIVE_ERROR_LIMIT),
            min_sample=_or(self._pick(metric, "min_sample"), min_sample),
            timeout=_or(self._pick(metric, "timeout"), 30.0),
            success_condition=metric.success_condition,
            failure_condition=metric.failure_condition,
        )


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value


def _problem(
    loc: tuple[str | int, ...], value: object, message: str, hint: str | None
) -> InitErrorDetails:
    return InitErrorDetails(type=invalid(message, hint), loc=loc, input=value)


AnalysisTemplates = dict[str, AnalysisTemplateConfig]
"""The ``analysis:`` section: template name -> template (for ``ProjectConfig``)."""
