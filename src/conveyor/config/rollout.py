"""How a release rolls out: the strategy that replaces the old version, its canary steps, and
the triggers that roll it back.

Strategies are a discriminated union on ``kind``, but nobody wants to type ``kind:`` in a
config file, so a before-validator accepts the forms people write (``strategy: recreate``
or ``strategy: {rolling: {max_surge: 1}}``) and the JSON Schema describes those forms.
The canonical ``{kind: ...}`` mapping is accepted too, so a dumped model validates again.
``StrategyField`` is that field type, validator and schema together.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    Discriminator,
    Field,
    Tag,
    WithJsonSchema,
    model_validator,
)

from conveyor.config.durations import Count, Duration, IntOrPercent, Percentage, PositiveDuration
from conveyor.config.fields import ConfigModel
from conveyor.config.json_schema import embedded_schema
from conveyor.config.suggest import choose_hint, describe, invalid


class RollbackConfig(ConfigModel):
    """When a new version is judged bad and users are returned to the previous one."""

    error_rate: Percentage = Field(
        0.05,
        description="Roll back when the share of 5xx answers of the new version, as seen by the "
        "router over `window`, is evidently above this: a sequential test decides after a few "
        "requests for a broken version, never on one failed request. '5%' or 0.05.",
    )
    min_requests: Count = Field(
        1,
        ge=1,
        description="A floor: windows with fewer requests are not judged. The test needs none "
        "(it was 20 before the sequential test; configs that set it keep their floor).",
    )
    window: PositiveDuration = Field(10.0, description="Sliding window for the error rate.")
    max_restarts: Count = Field(
        2,
        ge=1,
        description="Crashes of a new instance during a rollout that count as a crash loop.",
    )
    verification: Duration = Field(
        15.0,
        description="After all traffic is on the new version, keep watching it this long.",
    )


class RecreateStrategy(ConfigModel):
    """Stop every old instance, then start the new ones: downtime, but never two versions."""

    kind: Literal["recreate"] = "recreate"


class RollingStrategy(ConfigModel):
    """Replace instances a few at a time, keeping capacity within the surge/unavailable bounds."""

    kind: Literal["rolling"] = "rolling"
    max_surge: IntOrPercent = Field(
        1, description="Extra instances allowed above the desired count (count or '25%')."
    )
    max_unavailable: IntOrPercent = Field(
        0, description="Instances allowed below the desired count (count or '25%')."
    )
    min_ready: Duration = Field(
        0.0,
        description="How long a new instance must stay ready before it counts as available "
        "and an old one may go (Kubernetes' minReadySeconds): a version that crashes soon "
        "after passing readiness is rolled back while the old instances still serve.",
        examples=["5s"],
    )

    @model_validator(mode="after")
    def _can_progress(self) -> RollingStrategy:
        if self.max_surge in (0, "0%") and self.max_unavailable in (0, "0%"):
            raise invalid(
                "max_surge and max_unavailable cannot both be 0: the rollout could never progress",
                "set max_surge: 1 to start a new instance before stopping an old one",
            )
        return self


class BlueGreenStrategy(ConfigModel):
    """Start a full new set beside the old one, then switch all traffic at once."""

    kind: Literal["blue_green"] = "blue_green"
    scale_down_delay: Duration = Field(
        30.0, description="Keep the old set running this long after the switch, for rollback."
    )
    auto_promote: bool = Field(
        True, description="Switch traffic as soon as the new set is ready, without approval."
    )


class PauseConfig(ConfigModel):
    duration: Duration | None = Field(
        None, description="How long to pause; omit (pause: {}) to wait for `conveyor promote`."
    )


class HeaderMatchConfig(ConfigModel):
    header: str = Field(description="Request header name, e.g. X-Canary.")
    value: str = Field(description="Requests whose header equals this go to the canary.")


class SetWeightStepConfig(ConfigModel):
    set_weight: int = Field(
        ge=0, le=100, description="Percent of users on the canary.", examples=[20]
    )


class PauseStepConfig(ConfigModel):
    pause: Duration | PauseConfig = Field(
        description="A duration (30s), or {} to wait for a human (`conveyor promote`)."
    )


class AnalysisStepConfig(ConfigModel):
    analysis: str = Field(description="Name of an `analysis:` template; blocks until judged.")


class HeaderRouteStepConfig(ConfigModel):
    set_header_route: HeaderMatchConfig = Field(
        description="Send requests with this header to the canary whatever the weight."
    )


_STEP_KEYS = {
    "set_weight": "set_weight",
    "pause": "pause",
    "analysis": "analysis",
    "set_header_route": "set_header_route",
}


def _step_tag(value: object) -> str | None:
    if isinstance(value, dict) and len(value) == 1:
        key = next(iter(value))
        return _STEP_KEYS.get(str(key))
    if isinstance(value, BaseModel):
        return next(iter(type(value).model_fields))
    return None


CanaryStep = Annotated[
    Annotated[SetWeightStepConfig, Tag("set_weight")]
    | Annotated[PauseStepConfig, Tag("pause")]
    | Annotated[AnalysisStepConfig, Tag("analysis")]
    | Annotated[HeaderRouteStepConfig, Tag("set_header_route")],
    Discriminator(
        _step_tag,
        custom_error_type="canary_step",
        custom_error_message="a canary step is one of set_weight: N, pause: 30s (or {}), "
        "analysis: NAME, set_header_route: {header: H, value: V}",
    ),
]


class CanaryStrategy(ConfigModel):
    """Expose the new version step by step (weights, pauses, analysis) and judge it as it goes."""

    kind: Literal["canary"] = "canary"
    steps: list[CanaryStep] = Field(min_length=1, description="The steps, in order.")
    analysis: str | None = Field(
        None, description="An `analysis:` template run in the background for the whole rollout."
    )
    scale_down_delay: Duration = Field(
        30.0, description="Keep the old version running this long after promotion, for rollback."
    )

    def analysis_names(self) -> list[str]:
        names = [s.analysis for s in self.steps if isinstance(s, AnalysisStepConfig)]
        return names + ([self.analysis] if self.analysis else [])


AnyStrategy = RecreateStrategy | RollingStrategy | BlueGreenStrategy | CanaryStrategy

STRATEGIES: dict[str, type[AnyStrategy]] = {
    "recreate": RecreateStrategy,
    "rolling": RollingStrategy,
    "blue_green": BlueGreenStrategy,
    "canary": CanaryStrategy,
}

StrategyConfig = Annotated[AnyStrategy, Field(discriminator="kind")]


def _strategy_form(value: object) -> object:
    """``"recreate"`` and ``{rolling: {...}}`` -> ``{"kind": ..., **params}``."""
    if isinstance(value, str):
        if value not in STRATEGIES:
            raise invalid(
                f"unknown strategy '{value}'", choose_hint(value, STRATEGIES, "strategies")
            )
        return {"kind": value}
    if not isinstance(value, dict) or "kind" in value:
        return value
    if len(value) != 1:
        raise invalid(
            f"a strategy mapping needs exactly one key, the strategy name; got {len(value)}",
            "write e.g. strategy: {rolling: {max_surge: 1}} or strategy: recreate",
        )
    [(name, params)] = value.items()
    if name not in STRATEGIES:
        raise invalid(
            f"unknown strategy '{name}'", choose_hint(str(name), STRATEGIES, "strategies")
        )
    if params is None:
        return {"kind": name}
    if not isinstance(params, dict):
        raise invalid(
            f"the {name} parameters must be a mapping, got {describe(params)}",
            f"write e.g. strategy: {{{name}: {{}}}} or strategy: {name}",
        )
    return {**params, "kind": name}


def _strategy_json_schema() -> dict[str, Any]:
    params: dict[str, Any] = {}
    for name, model in STRATEGIES.items():
        schema = embedded_schema(model)
        schema["properties"].pop("kind")
        params[name] = {"anyOf": [schema, {"type": "null"}]}
    return {
        "description": "How a new version replaces the old one: a name (recreate, rolling, "
        "blue_green) or a one-key mapping of the name to its parameters.",
        "default": "rolling",
        "anyOf": [
            # canary needs its steps, so it has no bare-name form
            {"type": "string", "enum": [n for n in STRATEGIES if n != "canary"]},
            {
                "type": "object",
                "properties": params,
                "additionalProperties": False,
                "minProperties": 1,
                "maxProperties": 1,
            },
        ],
    }


StrategyField = Annotated[
    StrategyConfig, BeforeValidator(_strategy_form), WithJsonSchema(_strategy_json_schema())
]
"""A ``strategy:`` as people write it: a name, a one-key mapping, or the canonical form."""
