"""A small, safe expression language for analysis conditions and pipeline ``if:`` guards.

Users write ``result > 0.01`` or ``default(result.p95, 0) < 0.250 and result.count >= 50`` in
conveyor.yaml, and those strings are evaluated by the controller against values that came from
the outside world (Prometheus, HTTP bodies, scripts). Python's ``eval`` is out of the question,
so this is a tokenizer and a recursive-descent parser that compiles the text into nested
closures. Only what is written here can run: literals, names from the caller's mapping, member
and index access, arithmetic, comparisons, ``and``/``or``/``not``, ``in`` and a handful of
functions.

It is strict on purpose. ``and`` wants booleans (no "truthy" strings), ``1 == true`` is false,
ordering mixed types is an error, and a missing field is an error unless wrapped in
``default(...)``. A condition that cannot be evaluated must surface as an *error* measurement,
never quietly as true or false. Every problem — syntax or evaluation — is an
``ExpressionError`` that points at the offending column; no Python exception leaks out, which
the hypothesis fuzz tests hold us to.
"""

from __future__ import annotations

import difflib
import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, TypeVar

from conveyor.errors import ExpressionError

Evaluator = Callable[[Mapping[str, object]], object]

MAX_NESTING = 32
"""Brackets and parentheses deeper than this are refused (the parser recurses on them)."""
MAX_DEPTH = 100
"""Expression trees deeper than this are refused (evaluation recurses on them)."""
_SYNTAX_HINT = "write conditions like: result > 0.01, result.p95 < 0.25 and result.count >= 50"

_TOKEN_RE = re.compile(
    r"""(?P<space>\s+)
    |(?P<number>(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?)
    |(?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
    |(?P<name>[A-Za-z_][A-Za-z0-9_]*)
    |(?P<op>==|!=|<=|>=|&&|\|\||[-+*/%<>!()\[\],.])""",
    re.VERBOSE | re.DOTALL,
)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"'}
_KEYWORDS = {"and", "or", "not", "in", "true", "false", "null"}
_ALIASES = {"&&": "and", "||": "or", "!": "not"}
_COMPARISONS = {"==", "!=", "<", "<=", ">", ">=", "in"}


class _Missing(ExpressionError):
    """A name, field or index that is not there: the one error ``default(...)`` absorbs."""


@dataclass(frozen=True)
class _Token:
    kind: str  # number | string | name | op | end
    text: str
    position: int


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    position = 0
    while position < len(text):
        match = _TOKEN_RE.match(text, position)
        if match is None:
            char = text[position]
            if char == "=":
                raise ExpressionError("'=' is not an operator", position, text, "use == to compare")
            if char in "\"'":
                raise ExpressionError("this string is never closed", position, text)
            if char in "&|":
                hint = f"use {'and' if char == '&' else 'or'} (or {char * 2})"
                raise ExpressionError(f"'{char}' is not an operator", position, text, hint)
            raise ExpressionError(f"unexpected character {char!r}", position, text, _SYNTAX_HINT)
        kind = match.lastgroup or "space"
        if kind != "space":
            tokens.append(_Token(kind, match.group(), position))
        position = match.end()
    tokens.append(_Token("end", "", len(text)))
    return tokens


def _unquote(token: _Token, text: str) -> str:
    def escape(match: re.Match[str]) -> str:
        if match.group(1) not in _ESCAPES:
            where = token.position + 1 + match.start()
            raise ExpressionError(f"unknown escape {match.group()}", where, text)
        return _ESCAPES[match.group(1)]

    return re.sub(r"\\(.)", escape, token.text[1:-1], flags=re.DOTALL)


# -- values ---------------------------------------------------------------------------------


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def kind_of(value: object) -> str:
    """How a value is named in messages: the language's own vocabulary, not Python's."""
    if value is None or isinstance(value, bool):
        return "null" if value is None else "a boolean"
    for kinds, name in _KINDS:
        if isinstance(value, kinds):
            return name
    return f"an unsupported value ({type(value).__name__})"


_KINDS: tuple[tuple[type | tuple[type, ...], str], ...] = (
    ((int, float), "a number"),
    (str, "a string"),
    (Mapping, "a mapping"),
    ((list, tuple), "a list"),
)


def _equal(left: object, right: object) -> bool:
    if _is_number(left) and _is_number(right):
        return left == right
    if isinstance(left, list | tuple) and isinstance(right, list | tuple):
        return len(left) == len(right) and all(map(_equal, left, right))
    if isinstance(left, Mapping) and isinstance(right, Mapping):
        return left.keys() == right.keys() and all(_equal(left[k], right[k]) for k in left)
    if type(left) is not type(right):
        return False
    return left == right


# -- the compiled form ----------------------------------------------------------------------


@dataclass(frozen=True)
class Expression:
    """A compiled expression; ``names`` are the free identifiers it reads (``result``...)."""

    text: str
    names: frozenset[str]
    _run: Evaluator = field(repr=False, compare=False)

    def evaluate(self, names: Mapping[str, object]) -> object:
        try:
            return self._run(names)
        except ExpressionError as error:
            # Closures raise without the text; point into it here, and drop the _Missing type
            # so that callers see one error class.
            raise ExpressionError(error.reason, error.position, self.text, error.hint) from None
        except (ArithmeticError, ValueError, TypeError, RecursionError) as error:
            raise ExpressionError(f"cannot evaluate: {error}", 0, self.text) from None

    def evaluate_condition(self, names: Mapping[str, object]) -> bool:
        """Evaluate and insist on a boolean: a condition that yields 3 is a mistake."""
        value = self.evaluate(names)
        if not isinstance(value, bool):
            raise ExpressionError(
                f"a condition must be true or false, but this gives {kind_of(value)}",
                0,
                self.text,
                "compare the value, e.g. result > 0.01",
            )
        return value


@lru_cache(maxsize=1024)
def compile_expression(text: str) -> Expression:
    """Parse ``text`` once; the result is immutable, so compiling is cached."""
    if not text.strip():
        raise ExpressionError("the expression is empty", 0, "", _SYNTAX_HINT)
    parser = _Parser(text)
    try:
        run, _ = parser.expression()
    except RecursionError:
        raise ExpressionError("this expression is nested too deeply", 0, text) from None
    token = parser.peek()
    if token.kind != "end":
        raise parser.unexpected(token)
    return Expression(text, frozenset(parser.names), run)


# -- the parser -----------------------------------------------------------------------------

_Node = tuple[Evaluator, int]  # the closure and the depth of the tree under it
_Make = Callable[[str, Evaluator, Evaluator, int], Evaluator]
_T = TypeVar("_T")


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.index = 0
        self.nesting = 0
        self.names: set[str] = set()

    def peek(self) -> _Token:
        return self.tokens[self.index]

    def advance(self) -> _Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def at(self, *words: str) -> bool:
        token = self.peek()
        word = _ALIASES.get(token.text, token.text)
        return token.kind in ("op", "name") and word in words

    def expect(self, op: str) -> _Token:
        token = self.advance()
        if token.text != op:
            self.index -= 1
            raise self.unexpected(token, f"expected '{op}'")
        return token

    def error(self, reason: str, position: int, hint: str | None = None) -> ExpressionError:
        return ExpressionError(reason, position, self.text, hint)

    def unexpected(self, token: _Token, expected: str = "") -> ExpressionError:
        what = "end of the expression" if token.kind == "end" else repr(token.text)
        reason = f"unexpected {what}" + (f", {expected}" if expected else "")
        return self.error(reason, token.position, _SYNTAX_HINT)

    def node(self, run: Evaluator, depth: int, position: int) -> _Node:
        if depth > MAX_DEPTH:
            raise self.error("this expression is too long to evaluate safely", position)
        return run, depth

    def expression(self) -> _Node:
        return self.chain(("or",), lambda: self.chain(("and",), self.negation, _logical), _logical)

    def chain(self, ops: tuple[str, ...], operand: Callable[[], _Node], make: _Make) -> _Node:
        """Left-associative runs of one precedence level: ``a or b or c``, ``a + b - c``."""
        left, depth = operand()
        while self.at(*ops):
            token = self.advance()
            right, right_depth = operand()
            run = make(_ALIASES.get(token.text, token.text), left, right, token.position)
            left, depth = self.node(run, 1 + max(depth, right_depth), token.position)
        return left, depth

    def negation(self) -> _Node:
        positions = []
        while self.at("not") and self.tokens[self.index + 1].text != "in":
            positions.append(self.advance().position)
        run, depth = self.comparison()
        for position in reversed(positions):
            run, depth = self.node(_negate(run, position), depth + 1, position)
        return run, depth

    def comparison(self) -> _Node:
        left, depth = self.sum()
        negated = self.at("not") and self.tokens[self.index + 1].text == "in"
        if not (negated or self.at(*_COMPARISONS)):
            return left, depth
        token = self.advance()
        op = "not in" if negated else token.text
        self.index += negated
        right, right_depth = self.sum()
        if self.at(*_COMPARISONS):
            hint = "join them: a < b and b < c"
            raise self.error("comparisons cannot be chained", self.peek().position, hint)
        run = _compare(op, left, right, token.position)
        return self.node(run, 1 + max(depth, right_depth), token.position)

    def sum(self) -> _Node:
        return self.chain(("+", "-"), lambda: self.chain(("*", "/", "%"), self.unary, _math), _math)

    def unary(self) -> _Node:
        signs = []
        while self.peek().kind == "op" and self.peek().text in ("-", "+"):
            signs.append(self.advance())
        run, depth = self.postfix()
        for token in reversed(signs):
            run, depth = self.node(
                _sign(token.text, run, token.position), depth + 1, token.position
            )
        return run, depth

    def postfix(self) -> _Node:
        run, depth = self.primary()
        while self.peek().text in (".", "["):
            token = self.advance()
            if token.text == ".":
                name = self.advance()
                if name.kind != "name":
                    self.index -= 1
                    raise self.unexpected(name, "expected a field name after '.'")
                run, depth = self.node(
                    _member(run, name.text, name.position), depth + 1, name.position
                )
            else:
                index, index_depth = self.nested(self.expression)
                self.expect("]")
                run = _index(run, index, token.position)
                run, depth = self.node(run, 1 + max(depth, index_depth), token.position)
        return run, depth

    def nested(self, parse: Callable[[], _T]) -> _T:
        self.nesting += 1
        if self.nesting > MAX_NESTING:
            raise self.error("brackets are nested too deeply", self.tokens[self.index - 1].position)
        try:
            return parse()
        finally:
            self.nesting -= 1

    def primary(self) -> _Node:
        token = self.advance()
        if token.kind == "number":
            return _constant(_number(token, self.text)), 1
        if token.kind == "string":
            return _constant(_unquote(token, self.text)), 1
        if token.text == "(":
            node = self.nested(self.expression)
            self.expect(")")
            return node
        if token.text == "[":
            items = self.nested(self.items)
            self.expect("]")
            depth = 1 + max((d for _, d in items), default=0)
            return self.node(_list([r for r, _ in items]), depth, token.position)
        if token.kind == "name" and token.text not in _KEYWORDS:
            if self.peek().text == "(":
                return self.call(token)
            self.names.add(token.text)
            return _name(token.text, token.position), 1
        if token.text in ("true", "false", "null"):
            return _constant({"true": True, "false": False, "null": None}[token.text]), 1
        self.index -= 1
        raise self.unexpected(token, "expected a value")

    def items(self) -> list[_Node]:
        items: list[_Node] = []
        while self.peek().text not in ("]", ")"):
            items.append(self.expression())
            if self.peek().text != ",":
                break
            self.advance()
        return items

    def call(self, name: _Token) -> _Node:
        self.advance()  # "("
        args = self.nested(self.items)
        self.expect(")")
        spec = _FUNCTIONS.get(name.text)
        if spec is None:
            close = difflib.get_close_matches(name.text, _FUNCTIONS, n=1)
            hint = f"did you mean {close[0]}()? " if close else ""
            raise self.error(
                f"unknown function '{name.text}'",
                name.position,
                hint + "functions: " + ", ".join(f"{f}()" for f in _FUNCTIONS),
            )
        low, high, impl = spec
        if not low <= len(args) <= high:
            wanted = str(low) if low == high else f"{low} or more"
            raise self.error(
                f"{name.text}() takes {wanted} argument(s), got {len(args)}", name.position
            )
        depth = 1 + max((d for _, d in args), default=0)
        return self.node(impl([r for r, _ in args], name.position), depth, name.position)


def _number(token: _Token, text: str) -> int | float:
    if len(token.text) > 64:
        raise ExpressionError("this number is too long", token.position, text)
    if any(c in token.text for c in ".eE"):
        return float(token.text)
    return int(token.text)


# -- closures -------------------------------------------------------------------------------


def _fail(reason: str, position: int, hint: str | None = None) -> ExpressionError:
    return ExpressionError(reason, position, "", hint)


def _constant(value: object) -> Evaluator:
    return lambda names: value


def _name(name: str, position: int) -> Evaluator:
    def run(names: Mapping[str, object]) -> object:
        if name in names:
            return names[name]
        close = difflib.get_close_matches(name, list(names), n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        hint += f"known names: {', '.join(sorted(names)) or '(none)'}"
        raise _Missing(f"unknown name '{name}'", position, "", hint)

    return run


def _member(target: Evaluator, name: str, position: int) -> Evaluator:
    def run(names: Mapping[str, object]) -> object:
        value = target(names)
        if isinstance(value, Mapping):
            if name in value:
                return value[name]
            fields = ", ".join(sorted(map(str, value))) or "(none)"
            raise _Missing(f"no field '{name}'", position, "", f"fields here: {fields}")
        raise _Missing(f"{kind_of(value)} has no field '{name}'", position)

    return run


def _index(target: Evaluator, key: Evaluator, position: int) -> Evaluator:
    def run(names: Mapping[str, object]) -> object:
        value, index = target(names), key(names)
        if isinstance(value, list | tuple):
            if not isinstance(index, int) or isinstance(index, bool):
                raise _fail(f"a list index must be a whole number, not {kind_of(index)}", position)
            if -len(value) <= index < len(value):
                return value[index]
            raise _Missing(f"index {index} is out of range (length {len(value)})", position)
        if isinstance(value, Mapping):
            if isinstance(index, str) and index in value:
                return value[index]
            raise _Missing(f"no field {index!r}", position)
        raise _Missing(f"cannot index {kind_of(value)}", position)

    return run


def _list(items: Sequence[Evaluator]) -> Evaluator:
    return lambda names: [item(names) for item in items]


def _boolean(value: object, word: str, position: int) -> bool:
    if not isinstance(value, bool):
        raise _fail(f"'{word}' needs true or false, got {kind_of(value)}", position)
    return value


def _logical(word: str, left: Evaluator, right: Evaluator, position: int) -> Evaluator:
    if word == "and":
        return lambda n: _boolean(left(n), word, position) and _boolean(right(n), word, position)
    return lambda n: _boolean(left(n), word, position) or _boolean(right(n), word, position)


def _negate(operand: Evaluator, position: int) -> Evaluator:
    return lambda names: not _boolean(operand(names), "not", position)


def _sign(op: str, operand: Evaluator, position: int) -> Evaluator:
    def run(names: Mapping[str, object]) -> object:
        value = operand(names)
        if not _is_number(value):
            raise _fail(f"'{op}' needs a number, got {kind_of(value)}", position)
        return -value if op == "-" else value  # type: ignore[operator]

    return run


_Operator = Callable[[Any, Any], object]
_ARITHMETIC: dict[str, _Operator] = {"+": operator.add, "-": operator.sub, "*": operator.mul}
_ARITHMETIC |= {"/": operator.truediv, "%": operator.mod}
_ORDER: dict[str, _Operator] = {"<": operator.lt, "<=": operator.le, ">": operator.gt}
_ORDER |= {">=": operator.ge}


def _math(op: str, left: Evaluator, right: Evaluator, position: int) -> Evaluator:
    apply = _ARITHMETIC[op]

    def run(names: Mapping[str, object]) -> object:
        a, b = left(names), right(names)
        if op == "+" and isinstance(a, str) and isinstance(b, str):
            return a + b
        if not (_is_number(a) and _is_number(b)):
            raise _fail(f"cannot apply '{op}' to {kind_of(a)} and {kind_of(b)}", position)
        if op in "/%" and b == 0:
            raise _fail("division by zero", position)
        return apply(a, b)

    return run


def _compare(op: str, left: Evaluator, right: Evaluator, position: int) -> Evaluator:
    def run(names: Mapping[str, object]) -> object:
        a, b = left(names), right(names)
        if op in ("==", "!="):
            return _equal(a, b) == (op == "==")
        if op in ("in", "not in"):
            return _contains(b, a, position) == (op == "in")
        if (_is_number(a) and _is_number(b)) or (isinstance(a, str) and isinstance(b, str)):
            return _ORDER[op](a, b)
        raise _fail(f"cannot compare {kind_of(a)} with {kind_of(b)} using '{op}'", position)

    return run


def _contains(container: object, item: object, position: int) -> bool:
    if isinstance(container, list | tuple):
        return any(_equal(item, element) for element in container)
    if isinstance(container, str) and isinstance(item, str):
        return item in container
    if isinstance(container, Mapping) and isinstance(item, str):
        return item in container
    raise _fail(f"cannot look for {kind_of(item)} in {kind_of(container)}", position)


# -- functions ------------------------------------------------------------------------------

_Impl = Callable[[Sequence[Evaluator], int], Evaluator]


def _numbers(values: Sequence[object], name: str, position: int) -> list[int | float]:
    if len(values) == 1 and isinstance(values[0], list | tuple):
        values = values[0]
    if not values:
        raise _fail(f"{name}() of an empty list", position)
    for value in values:
        if not _is_number(value):
            raise _fail(f"{name}() needs numbers, got {kind_of(value)}", position)
    return list(values)  # type: ignore[arg-type]


def _function(body: Callable[[list[object], int], object]) -> _Impl:
    return lambda args, position: lambda names: body([a(names) for a in args], position)


def _len(values: list[object], position: int) -> object:
    value = values[0]
    if isinstance(value, str | list | tuple | Mapping):
        return len(value)
    raise _fail(f"len() needs a string, list or mapping, got {kind_of(value)}", position)


def _abs(values: list[object], position: int) -> object:
    if isinstance(values[0], list | tuple):
        raise _fail("abs() needs a number, got a list", position)
    return abs(_numbers(values, "abs", position)[0])


def _number_of(values: list[object], position: int) -> object:
    value = values[0]
    if _is_number(value):
        return value
    if isinstance(value, str) and re.fullmatch(
        r"\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*", value
    ):
        return float(value)
    raise _fail(f"number() cannot read {kind_of(value)} as a number", position)


def _default(args: Sequence[Evaluator], position: int) -> Evaluator:
    """``default(x, fallback)``: the fallback when x is missing, null or NaN. Lazy in x."""
    value, fallback = args

    def run(names: Mapping[str, object]) -> object:
        try:
            result = value(names)
        except _Missing:
            return fallback(names)
        if result is None or (isinstance(result, float) and math.isnan(result)):
            return fallback(names)
        return result

    return run


_FUNCTIONS: dict[str, tuple[int, int, _Impl]] = {
    "len": (1, 1, _function(_len)),
    "abs": (1, 1, _function(_abs)),
    "min": (1, 64, _function(lambda v, p: min(_numbers(v, "min", p)))),
    "max": (1, 64, _function(lambda v, p: max(_numbers(v, "max", p)))),
    "isNaN": (1, 1, _function(lambda v, p: isinstance(v[0], float) and math.isnan(v[0]))),
    "number": (1, 1, _function(_number_of)),
    "default": (2, 2, _default),
}
