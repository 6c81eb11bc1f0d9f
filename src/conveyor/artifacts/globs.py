"""``build.inputs``: which files of a service a build may see, as path globs.

One small dialect, the one people already write in ``.gitignore`` and CI cache keys, and
nothing cleverer: patterns are relative to the service path and use ``/``; ``*`` and ``?``
stay inside one path segment, ``[abc]`` is a character class, ``**`` as a whole segment
spans any number of directories (none included). A pattern that names a directory takes
everything below it, so ``src`` and ``src/`` mean ``src/**``. Patterns are anchored at the
service path: ``*.py`` is the top-level Python files, ``**/*.py`` all of them.

Pure string matching, no file system: the workspace lists the files, this says which stay,
and which patterns matched nothing (almost always a typo, so the build refuses them).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from conveyor.errors import BuildFailed

INPUTS_HINT = "check build.inputs in conveyor.yaml"


@dataclass(frozen=True)
class Globs:
    """Compiled ``build.inputs`` patterns."""

    patterns: tuple[str, ...]
    compiled: tuple[re.Pattern[str], ...]

    @classmethod
    def compile(cls, patterns: Sequence[str]) -> Globs:
        return cls(tuple(patterns), tuple(_compile(p) for p in patterns))

    def matches(self, path: str) -> bool:
        """Whether ``path`` (POSIX, relative to the service path) is an input."""
        return any(regex.fullmatch(path) for regex in self.compiled)

    def select(self, paths: Iterable[str]) -> tuple[list[str], list[str]]:
        """The paths that match, and the patterns that matched none of them."""
        used = [False] * len(self.compiled)
        selected = []
        for path in paths:
            hit = False
            for index, regex in enumerate(self.compiled):
                if regex.fullmatch(path):
                    used[index] = hit = True
            if hit:
                selected.append(path)
        unused = [p for p, u in zip(self.patterns, used, strict=True) if not u]
        return selected, unused


def _compile(pattern: str) -> re.Pattern[str]:
    text = pattern.strip()
    pure = PurePosixPath(text)
    if not text or pure.is_absolute() or ".." in pure.parts or text.startswith("~"):
        raise BuildFailed(
            f"build input '{pattern}' is not a pattern inside the service directory",
            hint=f"{INPUTS_HINT}: use relative globs such as 'src/**/*.py' or 'pyproject.toml'",
        )
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if not parts:  # "." names the service directory itself
        return re.compile(r".*", re.DOTALL)
    regex = ""
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        if part == "**":
            regex += ".*" if last else "(?:.*/)?"
        else:
            regex += _segment(part) + ("" if last else "/")
    # The path itself, or anything below it when the pattern names a directory.
    return re.compile(regex + "(?:/.*)?", re.DOTALL)


def _segment(part: str) -> str:
    """One path segment's glob as a regex that never crosses a '/'."""
    out = []
    i = 0
    while i < len(part):
        char = part[i]
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            end = _class_end(part, i)
            if end < 0:
                out.append(re.escape(char))
            else:
                body = part[i + 1 : end]
                negate = body[:1] in ("!", "^")
                body = body[1:] if negate else body
                escaped = body.replace("\\", "\\\\").replace("[", "\\[")
                out.append(f"[{'^/' if negate else ''}{escaped}]")
                i = end
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out)


def _class_end(part: str, start: int) -> int:
    """The index of the ']' closing the class opened at ``start``, or -1 (a literal '[')."""
    i = start + 1
    if i < len(part) and part[i] in "!^":
        i += 1
    if i < len(part) and part[i] == "]":  # a leading ']' is a member, as in fnmatch
        i += 1
    return part.find("]", i)
