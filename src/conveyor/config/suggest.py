"""Wording for config mistakes: "did you mean" suggestions and errors that carry a hint.

Most config errors are typos, so the cheapest useful hint is the nearest valid word. When
nothing is close, listing what *is* allowed is the next best thing: the user should never
have to open the docs to learn the spelling of a field.

Validators raise ``invalid(message, hint)`` rather than ``ValueError`` so that pydantic keeps
our wording verbatim (no "Value error, " prefix) and the loader can lift the hint out of the
error context into the ``ConfigProblem`` it reports.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable

from pydantic_core import PydanticCustomError

ERROR_TYPE = "conveyor"
"""The pydantic error type of every error raised through ``invalid``."""

_MESSAGE_KEY = "conveyor_message"
HINT_KEY = "conveyor_hint"


def closest(word: str, choices: Iterable[str]) -> str | None:
    """The choice a typo or an abbreviation (``prod``) most likely meant, or None."""
    options = list(choices)
    matches = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    if matches:
        return matches[0]
    folded = word.lower().replace("-", "_")
    extended = [c for c in options if len(folded) >= 2 and c.lower().startswith(folded)]
    if len(extended) == 1:
        return extended[0]
    return next((c for c in options if c.lower().replace("-", "_") == folded), None)


def known_list(choices: Iterable[str]) -> str:
    return ", ".join(choices) or "(none)"


def choose_hint(word: str, choices: Iterable[str], noun: str) -> str:
    """``did you mean 'x'?`` when a choice is close, else the full list of valid choices."""
    options = list(choices)
    match = closest(word, options)
    if match is not None:
        return f"did you mean '{match}'? known {noun}: {known_list(options)}"
    return f"known {noun}: {known_list(options)}"


def invalid(message: str, hint: str | None = None) -> PydanticCustomError:
    """A validation error whose message is shown verbatim and whose hint survives pydantic.

    The message travels in the context rather than as the template so that braces in user
    input cannot be mistaken for template placeholders.
    """
    context: dict[str, str] = {_MESSAGE_KEY: message}
    if hint is not None:
        context[HINT_KEY] = hint
    return PydanticCustomError(ERROR_TYPE, "{" + _MESSAGE_KEY + "}", context)


def describe(value: object) -> str:
    """How to name a wrong value in a message: its YAML spelling for scalars, a kind otherwise."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return repr(shown)
    return repr(value)


def flow(value: object, *, nested: bool = False) -> str:
    """A value as it is written in YAML flow style: ``[build, lint]``, ``{python: "3.11"}``.

    Strings stay plain where YAML reads them back as the same string and are double-quoted
    otherwise (``"3.11"`` would be a number, ``"{{ x }}"`` a mapping).
    """
    if isinstance(value, dict):
        items = (f"{key}: {flow(item, nested=True)}" for key, item in value.items())
        return "{" + ", ".join(items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(flow(item, nested=True) for item in value) + "]"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and not _plain_scalar(value, nested):
        return json.dumps(value)
    return str(value)


_INDICATORS = "-?:,[]{}#&*!|>'\"%@`"
_NOT_TEXT = re.compile(
    r"[-+]?(?:\d[\d_]*(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|true|false|yes|no|on|off|null|~",
    re.IGNORECASE,
)


def _plain_scalar(text: str, nested: bool) -> bool:
    """Whether ``text`` unquoted is read back by YAML as this very string."""
    if not text or text != text.strip() or text[0] in _INDICATORS or _NOT_TEXT.fullmatch(text):
        return False
    if ": " in text or " #" in text or text.endswith(":"):
        return False
    return not (nested and any(c in text for c in ",[]{}"))
