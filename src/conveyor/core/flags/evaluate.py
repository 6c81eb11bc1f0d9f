"""Evaluation: a flag's state in one environment compiled into one closure over parsed data.

SDKs evaluate in process, per request, so the work per call must be a dictionary lookup and
a function call when nothing targets, and a handful of predicate calls when rules do.
``compile_flag`` therefore resolves everything that does not depend on the context once:
variants to values, segments to predicates, and every possible answer to a prebuilt
``Resolution`` (the same object is returned on every call, so evaluating allocates nothing).

Order of decision, in one environment:

1. off: the ``off`` variant, reason ``DISABLED``;
2. the first rule whose conditions and segments all hold serves its variant
   (``TARGETING_MATCH``) — or its rollout, when the user's bucket is in it (``SPLIT``);
   a user outside a rule's rollout falls through to the next rule;
3. the environment's rollout: inside it its variant, outside it ``otherwise`` (the flag's
   off variant by default), both ``SPLIT``. A user without the stickiness attribute is
   outside (there is no bucket to be sticky with);
4. the environment's ``serve``, or the flag's ``default``: ``STATIC`` when the state has
   no rules and no rollout (the answer cannot depend on the context), else ``DEFAULT``.

Reasons and error codes are OpenFeature's, so the provider passes them through.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from conveyor.core.flags.conditions import Predicate, compile_condition, text
from conveyor.core.flags.hashing import normalized_value
from conveyor.core.flags.model import (
    Condition,
    Flag,
    FlagDefinitionError,
    Rollout,
    Segment,
    flag_from_json,
    segment_from_json,
)

Context = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Resolution:
    """One answer: the value, the variant that carries it, why, and an error code if any."""

    value: Any
    variant: str | None
    reason: str
    error: str | None = None
    message: str | None = None


@dataclass(frozen=True, slots=True)
class Compiled:
    """A flag ready to evaluate: ``evaluate(context) -> Resolution`` and its kind."""

    key: str
    kind: str
    evaluate: Callable[[Context], Resolution]
    static: Resolution | None  # the answer when it cannot depend on the context


def compile_flag(flag: Flag, env: str, segments: Mapping[str, Segment]) -> Compiled:
    state = flag.state(env)
    answers: dict[tuple[str, str], Resolution] = {}

    def answer(variant: str, reason: str) -> Resolution:
        found = answers.get((variant, reason))
        if found is None:
            found = answers[(variant, reason)] = Resolution(flag.variants[variant], variant, reason)
        return found

    if not state.on:
        off = answer(flag.off, "DISABLED")
        return Compiled(flag.key, flag.kind, lambda ctx: off, off)
    fallback = state.serve or flag.default
    if not state.rules and state.rollout is None:
        static = answer(fallback, "STATIC")
        return Compiled(flag.key, flag.kind, lambda ctx: static, static)

    Step = Callable[[Context], Resolution | None]
    steps: list[Step] = [
        _rule_step(
            _all(rule.conditions, rule.segments, segments),
            answer(rule.serve, "TARGETING_MATCH") if rule.serve is not None else None,
            _splitter(flag, rule.rollout, answer) if rule.rollout is not None else None,
        )
        for rule in state.rules
    ]
    last: Callable[[Context], Resolution]
    if state.rollout is not None:
        split = _splitter(flag, state.rollout, answer)
        outside = answer(state.rollout.otherwise or flag.off, "SPLIT")

        def last(ctx: Context) -> Resolution:
            return split(ctx) or outside

    else:
        default = answer(fallback, "DEFAULT")

        def last(ctx: Context) -> Resolution:
            return default

    if len(steps) == 0:
        return Compiled(flag.key, flag.kind, last, None)
    ordered = tuple(steps)

    def evaluate(ctx: Context) -> Resolution:
        for step in ordered:
            found = step(ctx)
            if found is not None:
                return found
        return last(ctx)

    return Compiled(flag.key, flag.kind, evaluate, None)


def _rule_step(
    holds: Predicate,
    served: Resolution | None,
    split: Callable[[Context], Resolution | None] | None,
) -> Callable[[Context], Resolution | None]:
    if served is not None:

        def serve(ctx: Context) -> Resolution | None:
            return served if holds(ctx) else None

        return serve
    assert split is not None

    def roll(ctx: Context) -> Resolution | None:
        return split(ctx) if holds(ctx) else None

    return roll


def _splitter(
    flag: Flag, rollout: Rollout, answer: Callable[[str, str], Resolution]
) -> Callable[[Context], Resolution | None]:
    """The rollout's variant for users whose bucket is in it, None for everyone else."""
    inside = answer(rollout.variant, "SPLIT")
    attribute, group, percentage = rollout.stickiness, flag.key, rollout.percentage
    if percentage <= 0:
        return lambda ctx: None
    if percentage >= 100:

        def everyone(ctx: Context) -> Resolution | None:
            return inside if ctx.get(attribute) is not None else None

        return everyone

    def split(ctx: Context) -> Resolution | None:
        value = ctx.get(attribute)
        if value is None:
            return None
        return inside if normalized_value(text(value), group) <= percentage else None

    return split


def _all(
    conditions: tuple[Condition, ...], names: tuple[str, ...], segments: Mapping[str, Segment]
) -> Predicate:
    predicates = [compile_condition(c.attribute, c.op, c.values) for c in conditions]
    for name in names:
        segment = segments.get(name)
        if segment is None:
            # A flag naming a segment the set lacks cannot hold for anyone: safer than all.
            return lambda ctx: False
        predicates.extend(
            compile_condition(c.attribute, c.op, c.values) for c in segment.conditions
        )
    if len(predicates) == 1:
        return predicates[0]
    group = tuple(predicates)

    def every(ctx: Context) -> bool:
        for predicate in group:  # noqa: SIM110 - a loop is faster than all(genexpr)
            if not predicate(ctx):
                return False
        return True

    return every


def compile_document(doc: Mapping[str, Any]) -> tuple[str, dict[str, Compiled]]:
    """A published environment document compiled: ``(env, {key: Compiled})``.

    A flag that does not parse (a newer server, a damaged file) is left out rather than
    failing the whole set: its callers get their default with ``FLAG_NOT_FOUND``.
    """
    env = str(doc.get("env", ""))
    raw_segments = doc.get("segments") or {}
    segments: dict[str, Segment] = {}
    for name, data in raw_segments.items() if isinstance(raw_segments, dict) else ():
        try:
            segments[name] = segment_from_json(name, data)
        except FlagDefinitionError:
            continue
    compiled: dict[str, Compiled] = {}
    raw_flags = doc.get("flags") or {}
    for key, data in raw_flags.items() if isinstance(raw_flags, dict) else ():
        try:
            flag = flag_from_json(key, data, list(segments))
        except FlagDefinitionError:
            continue
        compiled[key] = compile_flag(flag, env, segments)
    return env, compiled


def evaluate(flag: Flag, env: str, segments: Mapping[str, Segment], ctx: Context) -> Resolution:
    """One evaluation without keeping the compiled form (tests, the server's previews)."""
    return compile_flag(flag, env, segments).evaluate(ctx)
