"""The condition language: what it computes, what it refuses, and that it never crashes."""

from __future__ import annotations

import math
import string
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conveyor.core.expressions import (
    MAX_DEPTH,
    Expression,
    ExpressionError,
    compile_expression,
)
from conveyor.errors import ConveyorError

NAMES: dict[str, object] = {
    "result": {"p95": 0.2, "count": 120, "codes": [200, 503], "nan": math.nan, "none": None},
    "value": 0.02,
    "values": [1, 5, 2],
    "service": "catalog",
    "ok": True,
}


def run(text: str, names: dict[str, object] | None = None) -> object:
    return compile_expression(text).evaluate(NAMES if names is None else names)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("10 - 4 - 3", 3),  # left-associative
        ("7 / 2", 3.5),
        ("7 % 4", 3),
        ("-2 + +3", 1),
        ("- - 3", 3),
        ("1.5e2", 150.0),
        (".5 + 1.", 1.5),
        ("'it\\'s' + \"!\"", "it's!"),
        ("'a\\tb'", "a\tb"),
        ("value > 0.01", True),
        ("value <= 0.01", False),
        ("result.p95 < 0.25 and result.count >= 50", True),
        ("result['p95'] == 0.2", True),
        ("result.codes[0] == 200", True),
        ("result.codes[-1] == 503", True),
        ("503 in result.codes", True),
        ("404 not in result.codes", True),
        ("not 404 in result.codes", True),
        ("'cat' in service", True),
        ("'p95' in result", True),
        ("service == 'catalog'", True),
        ("service != 'catalog'", False),
        ("'a' < 'b'", True),
        ("1 == 1.0", True),
        ("1 == true", False),  # booleans are not numbers
        ("null == null", True),
        ("result.none == null", True),
        ("[1, 2] == [1, 2.0]", True),
        ("[1, [2]] == [1, [3]]", False),
        ("true and not false", True),
        ("false or ok", True),
        ("ok && !false || false", True),
        ("not not ok", True),
        ("false and 1", False),  # short-circuit: the right side is never looked at
        ("true or 1", True),
        ("len(values) == 3 and len('abc') == 3 and len(result) == 5", True),
        ("abs(-2.5)", 2.5),
        ("min(3, 1, 2)", 1),
        ("max(values)", 5),
        ("isNaN(result.nan)", True),
        ("isNaN(value)", False),
        ("isNaN('x')", False),
        ("number('0.25') * 4", 1.0),
        ("number(3)", 3),
        ("default(result.p99, 1)", 1),
        ("default(result.none, 2)", 2),
        ("default(result.nan, 3)", 3),
        ("default(result.codes[9], 4)", 4),
        ("default(missing, 5)", 5),
        ("default(result.p95, 9)", 0.2),
        ("[]", []),
        ("[1, 2,]", [1, 2]),
        ("result.nan == result.nan", False),  # IEEE: NaN equals nothing
    ],
)
def test_evaluates(text: str, expected: object) -> None:
    value = run(text)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    ("text", "reason", "column"),
    [
        ("result = 1", "'=' is not an operator", 8),
        ("result >", "unexpected end of the expression, expected a value", 9),
        ("(1", "expected ')'", 3),
        ("1 2", "unexpected '2'", 3),
        ("a < b < c", "comparisons cannot be chained", 7),
        ("'abc", "this string is never closed", 1),
        ("'a\\qb'", "unknown escape \\q", 3),
        ("a & b", "'&' is not an operator", 3),
        ("a | b", "'|' is not an operator", 3),
        ("a @ b", "unexpected character '@'", 3),
        ("lenn(x)", "unknown function 'lenn'", 1),
        ("len(1, 2)", "len() takes 1 argument(s), got 2", 1),
        ("default(1)", "default() takes 2 argument(s), got 1", 1),
        ("result.", "expected a field name after '.'", 8),
        ("result.1", "unexpected '.1'", 7),
        ("not", "unexpected end of the expression", 4),
        ("", "the expression is empty", None),
        (" \n", "the expression is empty", None),
        ("x[1", "expected ']'", 4),
        ("f(1)(2)", "unknown function 'f'", 1),
        ("9" * 65, "this number is too long", 1),
        ("(" * 40 + "1" + ")" * 40, "brackets are nested too deeply", 33),
        ("+".join(["1"] * (MAX_DEPTH + 2)), "too long to evaluate safely", None),
    ],
)
def test_refuses_to_compile(text: str, reason: str, column: int | None) -> None:
    with pytest.raises(ExpressionError) as caught:
        compile_expression(text)
    error = caught.value
    assert reason in error.reason
    if column is not None:
        assert error.position == column - 1
        pointer = error.message.splitlines()
        assert pointer[-1].index("^") - 4 == column - 1  # the caret sits under the column
    assert isinstance(error, ConveyorError)


def test_syntax_errors_carry_hints() -> None:
    with pytest.raises(ExpressionError) as caught:
        compile_expression("result = 1")
    assert caught.value.hint == "use == to compare"
    with pytest.raises(ExpressionError) as caught:
        compile_expression("lenn(x)")
    assert caught.value.hint is not None and "did you mean len()?" in caught.value.hint


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("reslt > 1", "unknown name 'reslt'"),
        ("result.p99 > 1", "no field 'p99'"),
        ("result.codes[5]", "index 5 is out of range (length 2)"),
        ("result.codes['a']", "a list index must be a whole number, not a string"),
        ("result.codes[true]", "a list index must be a whole number, not a boolean"),
        ("value.x", "a number has no field 'x'"),
        ("value[0]", "cannot index a number"),
        ("1 + true", "cannot apply '+' to a number and a boolean"),
        ("'a' + 1", "cannot apply '+' to a string and a number"),
        ("'a' * 3", "cannot apply '*' to a string and a number"),
        ("1 / 0", "division by zero"),
        ("1 % 0.0", "division by zero"),
        ("1 < 'a'", "cannot compare a number with a string using '<'"),
        ("null < 1", "cannot compare null with a number using '<'"),
        ("value and true", "'and' needs true or false, got a number"),
        ("not value", "'not' needs true or false, got a number"),
        ("-service", "'-' needs a number, got a string"),
        ("1 in 2", "cannot look for a number in a number"),
        ("len(3)", "len() needs a string, list or mapping, got a number"),
        ("max([])", "max() of an empty list"),
        ("min(1, 'a')", "min() needs numbers, got a string"),
        ("abs(values)", "abs() needs a number, got a list"),
        ("number('abc')", "number() cannot read a string as a number"),
        ("value == weird", "unknown name 'weird'"),
    ],
)
def test_refuses_to_evaluate(text: str, reason: str) -> None:
    expression = compile_expression(text)
    with pytest.raises(ExpressionError) as caught:
        expression.evaluate({**NAMES, "weird": None} if "weird" not in text else NAMES)
    assert reason in caught.value.reason
    assert text in caught.value.message  # the message shows the expression with a caret


def test_unknown_names_suggest_the_close_one() -> None:
    with pytest.raises(ExpressionError) as caught:
        run("reslt > 1")
    assert caught.value.hint is not None
    assert caught.value.hint.startswith("did you mean 'result'?")
    assert caught.value.position == 0


def test_error_positions_point_at_the_operator() -> None:
    with pytest.raises(ExpressionError) as caught:
        run("value > 0 and service > 1")
    assert caught.value.position == len("value > 0 and service ")


def test_unsupported_python_values_are_named_not_used() -> None:
    with pytest.raises(ExpressionError) as caught:
        run("x + 1", {"x": object()})
    assert "an unsupported value (object)" in caught.value.reason


def test_names_lists_the_free_identifiers() -> None:
    expression = compile_expression("default(result.p95, limit) < max(a, 1) and len(b) > 0")
    assert expression.names == {"result", "limit", "a", "b"}


def test_condition_must_be_boolean() -> None:
    assert compile_expression("value > 0.01").evaluate_condition(NAMES) is True
    with pytest.raises(ExpressionError) as caught:
        compile_expression("value * 2").evaluate_condition(NAMES)
    assert "must be true or false" in caught.value.reason


def test_deep_but_allowed_expressions_evaluate() -> None:
    text = "+".join(["1"] * (MAX_DEPTH - 1))
    assert run(text) == MAX_DEPTH - 1
    assert run("not " * 50 + "true") is True
    assert run("(" * 30 + "1" + ")" * 30) == 1


def test_compiling_is_cached() -> None:
    assert compile_expression("value > 1") is compile_expression("value > 1")


# -- fuzzing: any text gives an Expression or an ExpressionError, nothing else --------------

_ALPHABET = string.ascii_letters[:8] + string.digits + " .,()[]'\"\\+-*/%<>=!&|_\t\n"
_FRAGMENTS = st.sampled_from(
    [
        "result", "value", "values", "service", "ok", "missing", ".p95", ".codes", "[0]",
        "[-1]", " and ", " or ", " not ", " in ", " not in ", "==", "!=", "<", ">=", "+",
        "-", "*", "/", "%", "(", ")", "[", "]", ",", "1", "0", "0.0", "1e308", "'a'",
        "true", "false", "null", "len(", "abs(", "min(", "max(", "isNaN(", "number(",
        "default(", "!", "&&", "||",
    ]
)  # fmt: skip


def _check(text: str, names: dict[str, Any]) -> None:
    try:
        expression = compile_expression(text)
    except ExpressionError as error:
        assert 0 <= error.position <= len(text)
        return
    assert isinstance(expression, Expression)
    try:
        expression.evaluate(names)
    except ExpressionError as error:
        assert error.text == text


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=_ALPHABET, max_size=40))
def test_fuzz_random_characters(text: str) -> None:
    _check(text, NAMES)


@settings(max_examples=600, deadline=None)
@given(st.lists(_FRAGMENTS, max_size=14).map("".join))
def test_fuzz_token_soup(text: str) -> None:
    _check(text, NAMES)


_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_FRAGMENTS, max_size=10).map("".join), _VALUES)
def test_fuzz_any_result_value(text: str, value: object) -> None:
    _check(text, {**NAMES, "result": value})
