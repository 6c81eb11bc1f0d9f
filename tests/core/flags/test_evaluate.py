"""Evaluation order, reasons, rules, segments and rollouts; stickiness as properties."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.core.flags import (
    FlagDefinitionError,
    compile_document,
    compile_flag,
    document,
    flag_from_json,
    flag_to_json,
    segment_from_json,
)
from conveyor.core.flags.diff import diff

SEGMENTS = {
    "staff": segment_from_json(
        "staff", {"when": [{"attribute": "email", "op": "ends_with", "values": ["@corp.com"]}]}
    )
}

CHECKOUT: dict[str, Any] = {
    "kind": "string",
    "variants": {"classic": "v1", "fast": "v2", "beta": "v3"},
    "default": "classic",
    "off": "classic",
    "environments": {
        "production": {
            "on": True,
            "rules": [
                {"name": "staff", "segments": ["staff"], "serve": "beta"},
                {
                    "when": [
                        {"attribute": "country", "op": "in", "values": ["NL", "BE"]},
                        {"attribute": "app", "op": "semver_gte", "value": "2.0.0"},
                    ],
                    "serve": "fast",
                },
                {
                    "when": [{"attribute": "plan", "op": "eq", "value": "gold"}],
                    "rollout": {"percentage": 50, "variant": "fast", "stickiness": "userId"},
                },
            ],
            "rollout": {"percentage": 10, "variant": "fast", "stickiness": "userId"},
        },
        "staging": {"on": True, "serve": "beta"},
    },
}


def _compiled(env: str = "production") -> Any:
    flag = flag_from_json("checkout", CHECKOUT, list(SEGMENTS))
    return compile_flag(flag, env, SEGMENTS)


@pytest.mark.parametrize(
    ("env", "ctx", "variant", "reason"),
    [
        ("production", {"email": "dana@corp.com", "country": "NL"}, "beta", "TARGETING_MATCH"),
        ("production", {"country": "NL", "app": "2.3.1"}, "fast", "TARGETING_MATCH"),
        ("production", {"country": "NL", "app": "1.9.0", "userId": "u-3"}, "classic", "SPLIT"),
        ("production", {}, "classic", "SPLIT"),
        ("staging", {"email": "dana@corp.com"}, "beta", "STATIC"),
        ("dev", {"email": "dana@corp.com"}, "classic", "DISABLED"),
    ],
)
def test_decision_order_and_reasons(
    env: str, ctx: dict[str, Any], variant: str, reason: str
) -> None:
    got = _compiled(env).evaluate(ctx)
    assert (got.variant, got.reason) == (variant, reason)
    assert got.value == CHECKOUT["variants"][variant]


def test_a_user_outside_a_rule_rollout_falls_through() -> None:
    compiled = _compiled()
    gold = [compiled.evaluate({"plan": "gold", "userId": f"u{i}"}) for i in range(4000)]
    share = sum(r.variant == "fast" for r in gold) / len(gold)
    # 50% through the rule, plus 10% of the rest through the environment's rollout.
    assert 0.50 < share < 0.60


def test_static_answers_are_shared_objects() -> None:
    compiled = _compiled("staging")
    assert compiled.static is not None
    assert compiled.evaluate({}) is compiled.evaluate({"x": 1})


@given(st.text(min_size=1, max_size=30), st.integers(0, 100), st.integers(0, 100))
def test_rollout_is_sticky_and_grows_monotonically(user: str, low: int, high: int) -> None:
    low, high = sorted((low, high))

    def variant(percentage: int) -> str | None:
        flag = flag_from_json(
            "grow",
            {
                "environments": {
                    "p": {"on": True, "rollout": {"percentage": percentage, "variant": "on"}}
                }
            },
        )
        compiled = compile_flag(flag, "p", {})
        first = compiled.evaluate({"targetingKey": user})
        assert compiled.evaluate({"targetingKey": user}) == first  # same user, same answer
        return first.variant

    if variant(low) == "on":
        assert variant(high) == "on"


@pytest.mark.parametrize(
    ("data", "path", "words"),
    [
        ({"kind": "colour"}, ("kind",), "unknown kind"),
        ({"kind": "string", "variants": {"a": 1}, "default": "a"}, ("variants", "a"), "not text"),
        ({"kind": "number", "variants": {"a": 1}}, ("default",), "names its default"),
        ({"default": "maybe"}, ("default",), "not one of the flag's variants"),
        ({"environments": {"p": {"on": "yes"}}}, ("environments", "p", "on"), "true or false"),
        (
            {"environments": {"p": {"on": True, "rules": [{"serve": "on"}]}}},
            ("environments", "p", "rules", 0),
            "needs conditions",
        ),
        (
            {"environments": {"p": {"rules": [{"segments": ["nope"], "serve": "on"}]}}},
            ("environments", "p", "rules", 0, "segments", 0),
            "unknown segment",
        ),
        (
            {"environments": {"p": {"rollout": {"percentage": 101, "variant": "on"}}}},
            ("environments", "p", "rollout", "percentage"),
            "0 to 100",
        ),
        (
            {
                "environments": {
                    "p": {
                        "rules": [
                            {
                                "when": [{"attribute": "e", "op": "matches", "value": "(a*)*"}],
                                "serve": "on",
                            }
                        ]
                    }
                }
            },
            ("environments", "p", "rules", 0, "when", 0, "values"),
            "exponential",
        ),
        ({"colour": "red"}, ("colour",), "unknown field"),
    ],
)
def test_bad_flags_name_the_path(data: dict[str, Any], path: tuple[Any, ...], words: str) -> None:
    with pytest.raises(FlagDefinitionError) as caught:
        flag_from_json("f", data, list(SEGMENTS))
    assert caught.value.path == path
    assert words in caught.value.message


def test_json_round_trips_and_documents_compile() -> None:
    flag = flag_from_json("checkout", CHECKOUT, list(SEGMENTS))
    assert flag_from_json("checkout", flag_to_json(flag), list(SEGMENTS)) == flag
    doc = document("production", {"checkout": flag}, SEGMENTS, revision=7)
    assert set(doc["flags"]["checkout"]["environments"]) == {"production"}
    assert set(doc["segments"]) == {"staff"}
    env, compiled = compile_document(doc)
    assert env == "production"
    assert compiled["checkout"].evaluate({"email": "a@corp.com"}).variant == "beta"


def test_a_damaged_flag_in_a_document_is_left_out() -> None:
    _, compiled = compile_document(
        {"env": "p", "flags": {"good": {}, "bad": {"kind": "colour"}}, "segments": {}}
    )
    assert set(compiled) == {"good"}


def test_diff_names_changed_leaves() -> None:
    before = {"environments": {"p": {"on": False}}, "default": "on"}
    after = {"environments": {"p": {"on": True, "rollout": {"percentage": 5}}}, "default": "on"}
    assert diff(before, after) == [
        {"path": "environments.p.on", "before": False, "after": True},
        {"path": "environments.p.rollout", "before": None, "after": {"percentage": 5}},
    ]
    assert diff(before, before) == []
