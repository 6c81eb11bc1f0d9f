"""``analysis:`` templates: validation at load time, defaults, and strict argument filling."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError
from ruamel.yaml import YAML

from conveyor.config.analysis import AnalysisTemplateConfig, AnalysisTemplates
from conveyor.core.analysis import MetricSpec, substitute
from conveyor.errors import TemplateArgumentError

TEMPLATES: TypeAdapter[dict[str, AnalysisTemplateConfig]] = TypeAdapter(AnalysisTemplates)
ARGS = {"service": "catalog", "env": "prod", "canary_version": "v2", "stable_version": "v1"}

BRIEF_EXAMPLE = """
errors:
  args: [service, env, canary_version, stable_version]
  metrics:
    - name: error-rate
      provider: builtin
      query: error_rate
      interval: 5s
      count: 6
      initial_delay: 0s
      failure_condition: "result > 0.01"
      success_condition: "result <= 0.01"
      failure_limit: 1
      inconclusive_limit: 2
      consecutive_error_limit: 4
    - name: p95
      provider: builtin
      query: compare_latency
      compare: {quantile: 0.95, max_ratio: 1.2, alpha: 0.05, min_samples: 50}
    - name: prom-errors
      provider: prometheus
      address: http://127.0.0.1:9090
      query: 'sum(rate(x{service="{{args.service}}",version="{{ args.canary_version }}"}[1m]))'
      failure_condition: "result > 0.5"
    - name: smoke
      provider: http
      url: "http://127.0.0.1:18180/health/ready"
      json_path: "$.ready"
      success_condition: "result == true"
    - name: script
      provider: command
      run: ["./check.sh", "{{args.env}}"]
"""


def load(text: str) -> dict[str, AnalysisTemplateConfig]:
    return TEMPLATES.validate_python(YAML(typ="safe").load(text))


def problems(text: str) -> list[tuple[tuple[Any, ...], str, str | None]]:
    with pytest.raises(ValidationError) as caught:
        load(text)
    found = []
    for error in caught.value.errors():
        loc = tuple(part for part in error["loc"] if part not in ("builtin", "prometheus"))
        hint = (error.get("ctx") or {}).get("conveyor_hint")
        found.append((loc, error["msg"], hint))
    return found


def specs(text: str, args: dict[str, str] = ARGS) -> dict[str, MetricSpec]:
    (template,) = load(text).values()
    return {spec.name: spec for spec in template.metric_specs(args)}


def test_the_brief_example_loads_and_fills_in() -> None:
    metrics = specs(BRIEF_EXAMPLE)
    assert metrics["error-rate"] == MetricSpec(
        name="error-rate",
        provider="builtin",
        config={"query": "error_rate"},
        interval=5.0,
        count=6,
        initial_delay=0.0,  # explicitly 0s: the window default does not override it
        success_condition="result <= 0.01",
        failure_condition="result > 0.01",
        failure_limit=1,
        inconclusive_limit=2,
        consecutive_error_limit=4,
        min_sample=20,
    )
    assert metrics["p95"].config == {
        "query": "compare_latency",
        "compare": {  # as written, and what the file leaves out filled in with the defaults
            "quantile": 0.95,
            "max_ratio": 1.2,
            "min_delta": 0.025,
            "alpha": 0.05,
            "beta": 0.05,
            "min_samples": 50,
        },
    }
    assert metrics["p95"].count is None and metrics["p95"].interval is None  # measured once
    assert metrics["prom-errors"].config == {
        "address": "http://127.0.0.1:9090",
        "query": 'sum(rate(x{service="catalog",version="v2"}[1m]))',
    }
    assert metrics["smoke"].config["json_path"] == "$.ready"
    assert metrics["script"].config == {"run": ["./check.sh", "prod"]}
    assert metrics["script"].provider == "command"


def test_template_settings_are_defaults_for_metrics() -> None:
    metrics = specs(
        """
        t:
          interval: 10s
          count: 4
          failure_limit: 1
          timeout: 5s
          metrics:
            - {name: a, query: request_rate, failure_condition: "result < 1"}
            - {name: b, query: request_rate, count: 2, failure_limit: 0}
        """
    )
    assert (metrics["a"].interval, metrics["a"].count, metrics["a"].failure_limit) == (10, 4, 1)
    assert metrics["a"].timeout == 5.0
    assert (metrics["b"].count, metrics["b"].failure_limit) == (2, 0)


def test_query_dependent_defaults() -> None:
    metrics = specs(
        """
        t:
          interval: 5s
          count: 6
          metrics:
            - {name: window, query: error_rate}
            - {name: compared, query: compare_error_rate, compare: {max_delta: 1%}}
            - {name: prom, provider: prometheus, address: "http://127.0.0.1:1", query: up}
        """
    )
    assert metrics["window"].initial_delay == 5.0  # first window spans one interval
    assert metrics["window"].min_sample == 20  # 1 error in 3 requests is not a verdict
    assert metrics["prom"].min_sample == 0
    assert metrics["compared"].initial_delay == 0.0
    assert metrics["compared"].inconclusive_limit == 5  # only an all-inconclusive run is
    assert metrics["compared"].config["compare"] == {
        "max_delta": 0.01,
        "alpha": 0.05,
        "beta": 0.05,
        "min_requests": 1,  # a floor only: the posterior decides when the evidence suffices
    }
    assert metrics["prom"].initial_delay == 0.0 and metrics["prom"].inconclusive_limit == 0


def test_conditions_are_compiled_at_load_time() -> None:
    found = problems(
        """
        t:
          metrics:
            - {name: a, query: error_rate, failure_condition: "result = 1"}
            - {name: b, query: error_rate, success_condition: "reslt < 1"}
            - {name: c, query: error_rate, success_condition: "result >"}
        """
    )
    assert found[0] == (
        ("t", "metrics", 0, "failure_condition"),
        "'=' is not an operator in 'result = 1'",
        "use == to compare",
    )
    assert found[1][0] == ("t", "metrics", 1, "success_condition")
    assert found[1][1] == "condition 'reslt < 1' uses unknown name 'reslt'"
    assert found[1][2] is not None and found[1][2].startswith("did you mean 'result'?")
    assert found[2][1].startswith("unexpected end of the expression")


def test_placeholders_in_conditions_compile_with_a_stand_in() -> None:
    metrics = specs(
        """
        t:
          args: [limit, version]
          metrics:
            - name: a
              query: error_rate
              failure_condition: "result > {{args.limit}} and '{{args.version}}' != ''"
        """,
        {"limit": "0.02", "version": "v2"},
    )
    assert metrics["a"].failure_condition == "result > 0.02 and 'v2' != ''"


def test_template_level_problems_are_located_per_metric() -> None:
    found = problems(
        """
        t:
          args: [service]
          metrics:
            - {name: a, query: error_rate}
            - {name: a, provider: prometheus, address: "http://x", query: "{{args.servic}}"}
            - {name: d, query: error_rate, count: 3}
            - {name: e, provider: command, run: [x, "{{ args.nope }}", "{{env.X}}"]}
        """
    )
    assert found == [
        (
            ("t", "metrics", 1, "name"),
            "metric name 'a' is used twice",
            "give each metric of a template its own name",
        ),
        (
            ("t", "metrics", 1, "query"),
            "{{args.servic}} names an argument the template does not declare",
            "did you mean 'service'? known args: service (declare it under args:)",
        ),
        (
            ("t", "metrics", 2, "count"),
            "count 3 needs an interval between the measurements",
            "add interval: 30s (to the metric or the template)",
        ),
        (
            ("t", "metrics", 3, "run", 1),
            "{{ args.nope }} names an argument the template does not declare",
            "known args: service (declare it under args:)",
        ),
        (
            ("t", "metrics", 3, "run", 2),
            "{{env.X}} is not a placeholder Conveyor knows",
            "placeholders look like {{args.NAME}}",
        ),
    ]


@pytest.mark.parametrize(
    ("metric", "message"),
    [
        ("{name: a, query: compare_latency, failure_condition: 'result > 1'}", "decides by"),
        ("{name: a, query: compare_error_rate, compare: {quantile: 0.5}}", "compare.quantile"),
        ("{name: a, query: error_rate, compare: {alpha: 0.1}}", "`compare:` only applies"),
        ("{name: a, query: compare_latency, compare: {quantile: 1.5}}", "less than 1"),
        ("{name: a, query: error_rte}", "Input should be"),
        ("{name: A_b, query: error_rate}", "is not a valid metric name"),
        ("{name: a, provider: promethus, query: up}", "does not match"),
        ("{name: a, provider: prometheus, address: localhost:9090, query: up}", "http(s) URL"),
        ("{name: a, provider: http, url: 'http://x', extra: 1}", "Extra inputs"),
        ("{name: a, provider: command, run: []}", "expected a command"),
        ("{name: a, query: error_rate, interval: 0s}", "longer than 0"),
        ("{name: a, query: error_rate, failure_limit: -2}", "greater than or equal to -1"),
    ],
)
def test_metric_errors(metric: str, message: str) -> None:
    found = problems(f"t:\n  metrics:\n    - {metric}\n")
    assert any(message in text for _, text, _ in found), found


def test_a_template_needs_metrics() -> None:
    assert problems("t: {metrics: []}")[0][0] == ("t", "metrics")


def test_missing_argument_values_are_refused_at_release_time() -> None:
    (template,) = load(BRIEF_EXAMPLE).values()
    with pytest.raises(TemplateArgumentError) as caught:
        template.metric_specs({"service": "catalog"})
    assert caught.value.message == ("analysis template needs argument 'env', which was not given")
    assert caught.value.hint == "it declares: service, env, canary_version, stable_version"


def test_substitute_is_strict() -> None:
    assert substitute("a {{args.x}} {{ args.y }}", {"x": "1", "y": "2"}) == "a 1 2"
    assert substitute("no placeholders {", {}) == "no placeholders {"
    with pytest.raises(TemplateArgumentError, match="no value for argument 'z'"):
        substitute("{{args.z}}", {"x": "1"})
    with pytest.raises(TemplateArgumentError, match="is not a placeholder"):
        substitute("{{secrets.token}}", {})


def test_json_schema_describes_every_field() -> None:
    schema = TEMPLATES.json_schema()
    for name, model in schema["$defs"].items():
        for field, spec in model.get("properties", {}).items():
            assert "description" in spec, f"{name}.{field} has no description"
