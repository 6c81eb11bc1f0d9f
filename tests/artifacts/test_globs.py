"""``build.inputs`` patterns: which paths each one takes, as a table."""

from __future__ import annotations

import pytest

from conveyor.artifacts.globs import Globs
from conveyor.errors import BuildFailed


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("app.py", "app.py", True),
        ("app.py", "src/app.py", False),  # anchored at the service path
        ("*.py", "app.py", True),
        ("*.py", "src/app.py", False),  # '*' stays inside one segment
        ("**/*.py", "app.py", True),  # '**' spans zero directories too
        ("**/*.py", "src/deep/app.py", True),
        ("**/*.py", "src/app.pyc", False),
        ("src", "src/a/b.txt", True),  # a directory takes everything below it
        ("src/", "src/a/b.txt", True),
        ("src", "srcs/a.txt", False),
        ("src/**", "src/a/b.txt", True),
        ("src/**", "src", False),  # inside src, not a file called src
        ("src/**/test_*.py", "src/test_a.py", True),
        ("src/**/test_*.py", "src/x/y/test_a.py", True),
        ("src/**/test_*.py", "src/x/y/a_test.py", False),
        ("./app.py", "app.py", True),
        (".", "anything/at/all", True),
        ("?.txt", "a.txt", True),
        ("?.txt", "ab.txt", False),
        ("[ab].txt", "b.txt", True),
        ("[!ab].txt", "c.txt", True),
        ("[!ab].txt", "a.txt", False),
        ("[ab.txt", "[ab.txt", True),  # an unclosed class is a literal '['
        ("a+b(1).txt", "a+b(1).txt", True),  # regex characters are literal
        ("*", ".hidden", True),
        ("*", "dir/file", True),  # the directory matches, so its contents are inputs
    ],
)
def test_matching(pattern: str, path: str, expected: bool) -> None:
    assert Globs.compile([pattern]).matches(path) is expected


def test_select_reports_patterns_that_matched_nothing() -> None:
    globs = Globs.compile(["src/**", "*.toml", "docs/**"])
    selected, unused = globs.select(["src/a.py", "pyproject.toml", "README.md"])
    assert selected == ["src/a.py", "pyproject.toml"]
    assert unused == ["docs/**"]


@pytest.mark.parametrize("pattern", ["", "  ", "/etc/passwd", "../other", "a/../../b", "~/x"])
def test_patterns_that_leave_the_service_are_refused(pattern: str) -> None:
    with pytest.raises(BuildFailed) as info:
        Globs.compile([pattern])
    assert "build.inputs" in (info.value.hint or "")
