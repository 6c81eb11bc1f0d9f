"""``if:`` conditions and ``{{ ... }}`` templates, on top of the shared expression language.

The expression language (``core/expressions.py``) knows a fixed set of pure functions. Pipelines
need a few more that depend on where the run is: ``success()``, ``failure()``, ``always()``,
``cancelled()``, ``changed('glob')`` and, in templates, ``hashFiles('glob', ...)``. Rather than
widen the shared language, each such call is rewritten to a synthetic name (``__fn0``) whose
value is computed here and passed in with the other names. The language stays small and
pure, and these functions stay local to pipelines.

Names a condition sees: ``branch``, ``tag`` (strings or null), ``vars.X``, ``matrix.X``,
``needs.JOB.result`` (``success``/``failure``/``skipped``/``cancelled``) and
``needs.JOB.outputs.X``. Job names with a ``-`` are read with brackets: ``needs['unit-tests']``.

Status functions decide how a condition meets the results of its needs, as in GitHub Actions:
a condition that calls none of them is implicitly ``success() and (...)``, so a failed or
skipped need skips the job (skips propagate). Calling one takes over: ``always()`` runs
regardless, ``failure()`` runs only when a need failed (or was cancelled).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from conveyor.core.expressions import Expression, compile_expression
from conveyor.errors import ExpressionError

STATUS_FUNCTIONS = frozenset({"success", "failure", "always", "cancelled"})
_CALL = re.compile(
    r"""\b(success|failure|always|cancelled|changed|hashFiles)\s*\(
        \s*((?:(?:'[^']*'|"[^"]*")\s*,?\s*)*)\)""",
    re.VERBOSE,
)
_STRING = re.compile(r"""'([^']*)'|"([^"]*)\"""")
_TEMPLATE = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)


@dataclass(frozen=True)
class Call:
    """One rewritten call: ``function('arg', ...)`` now read as the name ``slot``."""

    slot: str
    function: str
    args: tuple[str, ...]


@dataclass(frozen=True)
class Condition:
    """A compiled ``if:``; ``uses_status`` tells whether it overrides the implicit success()."""

    text: str
    expression: Expression
    calls: tuple[Call, ...]

    @property
    def uses_status(self) -> bool:
        return any(call.function in STATUS_FUNCTIONS for call in self.calls)


def _rewrite(text: str) -> tuple[str, tuple[Call, ...]]:
    calls: list[Call] = []

    def replace(match: re.Match[str]) -> str:
        args = tuple(a if a is not None else b for a, b in _STRING.findall(match.group(2)))
        function = match.group(1)
        if function in STATUS_FUNCTIONS and args:
            raise ExpressionError(f"{function}() takes no arguments", match.start(), text)
        if function in ("changed", "hashFiles") and not args:
            raise ExpressionError(f"{function}() needs a quoted glob", match.start(), text)
        calls.append(Call(f"__fn{len(calls)}", function, args))
        return calls[-1].slot

    return _CALL.sub(replace, text), tuple(calls)


def compile_condition(text: str) -> Condition:
    """Compile an ``if:``; raises ``ExpressionError`` pointing into the text."""
    rewritten, calls = _rewrite(text)
    if any(call.function == "hashFiles" for call in calls):
        raise ExpressionError("hashFiles() is only for cache keys", 0, text)
    try:
        expression = compile_expression(rewritten)
    except ExpressionError as error:
        raise ExpressionError(error.reason, 0, text, error.hint) from None
    return Condition(text, expression, calls)


def status_values(need_results: Sequence[str]) -> dict[str, bool]:
    """What the status functions say, given the results of a job's direct needs."""
    return {
        "success": all(r == "success" for r in need_results),
        "failure": any(r in ("failure", "cancelled") for r in need_results),
        "cancelled": any(r == "cancelled" for r in need_results),
        "always": True,
    }


def changed_matches(globs: Sequence[str], changed: Sequence[str] | None) -> bool:
    """``changed('src/**')``: unknown changes (None) count as changed, to run rather than miss."""
    if changed is None:
        return True
    return any(fnmatch.fnmatchcase(path, glob) for glob in globs for path in changed)


def evaluate_condition(
    condition: Condition,
    names: Mapping[str, object],
    need_results: Sequence[str],
    changed: Sequence[str] | None,
) -> bool:
    status = status_values(need_results)
    bound = dict(names)
    for call in condition.calls:
        if call.function == "changed":
            bound[call.slot] = changed_matches(call.args, changed)
        else:
            bound[call.slot] = status[call.function]
    try:
        return condition.expression.evaluate_condition(bound)
    except ExpressionError as error:
        raise ExpressionError(error.reason, 0, condition.text, error.hint) from None


def render(
    template: str,
    names: Mapping[str, object],
    hash_files: Callable[[Sequence[str]], str] | None = None,
) -> str:
    """Fill ``{{ expr }}`` holes: env values, cache keys. Strings as is, others as JSON-ish."""

    def fill(match: re.Match[str]) -> str:
        rewritten, calls = _rewrite(match.group(1).strip())
        bound = dict(names)
        for call in calls:
            if call.function != "hashFiles" or hash_files is None:
                raise ExpressionError(
                    f"{call.function}() cannot be used in a template", 0, template
                )
            bound[call.slot] = hash_files(call.args)
        try:
            value = compile_expression(rewritten).evaluate(bound)
        except ExpressionError as error:
            raise ExpressionError(error.reason, 0, template, error.hint) from None
        if isinstance(value, bool):
            return "true" if value else "false"
        return "" if value is None else str(value)

    return _TEMPLATE.sub(fill, template)
