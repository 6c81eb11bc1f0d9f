"""Template keys, config versions, `--set` parsing and who may set what (core/release.py)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.core.release import (
    config_version,
    merge_config,
    parse_assignments,
    protected_reason,
    refused_overrides,
    template_key,
    validate_overrides,
)
from conveyor.errors import UsageError

BASE: dict[str, Any] = {
    "artifact_digest": "sha256:" + "a" * 64,
    "config": {"DB_URL": "postgres://db", "MODE": "fast"},
    "command": "python -m app --port ${PORT}",
    "port_env": "PORT",
}

env_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True)
configs = st.dictionaries(env_names, st.text(max_size=20), max_size=6)


def key(**overrides: Any) -> str:
    return template_key(**{**BASE, **overrides})


def test_template_key_shape_and_stability() -> None:
    first = key()
    assert re.fullmatch(r"t[0-9a-f]{10}", first)
    assert first == key()
    assert first == key(config={"MODE": "fast", "DB_URL": "postgres://db"})  # order is not identity


@pytest.mark.parametrize(
    ("field", "other"),
    [
        ("artifact_digest", "sha256:" + "b" * 64),
        ("config", {"DB_URL": "postgres://db", "MODE": "slow"}),
        ("config", {"DB_URL": "postgres://db"}),
        ("config", {"DB_URL": "postgres://db", "MODE": "fast", "EXTRA": ""}),
        ("command", "python -m app --port ${PORT} --debug"),
        ("command", ("python", "-m", "app", "--port", "${PORT}")),
        ("command", ["python -m app --port ${PORT}"]),  # one argv word is not a shell line
        ("port_env", "HTTP_PORT"),
    ],
)
def test_template_key_changes_with_each_input(field: str, other: object) -> None:
    assert key(**{field: other}) != key()


def test_template_key_command_tuple_and_list_agree() -> None:
    argv = ("python", "-m", "app")
    assert key(command=argv) == key(command=list(argv))


@given(configs, configs)
def test_template_key_equal_iff_config_equal(a: dict[str, str], b: dict[str, str]) -> None:
    same = template_key("d", a, "run", "PORT") == template_key("d", b, "run", "PORT")
    assert same == (a == b)


@given(configs, configs)
def test_config_version_equal_iff_config_equal(a: dict[str, str], b: dict[str, str]) -> None:
    assert re.fullmatch(r"c[0-9a-f]{10}", config_version(a))
    assert (config_version(a) == config_version(b)) == (a == b)


def test_config_version_ignores_order() -> None:
    a = config_version({"A": "1", "B": "2"})
    assert a == config_version({"B": "2", "A": "1"})
    assert a != config_version({"A": "1", "B": "3"})
    assert config_version({}) == config_version({})


@pytest.mark.parametrize(
    ("layers", "expected"),
    [
        ((), {}),
        (({"A": "1"},), {"A": "1"}),
        (({"A": "service", "B": "b"}, {"A": "env"}), {"A": "env", "B": "b"}),
        (({"A": "service"}, {"A": "env"}, {"A": "set"}), {"A": "set"}),
        (({"A": "service"}, {}, {"C": "set"}), {"A": "service", "C": "set"}),
        (({"A": "service"}, {"A": ""}), {"A": ""}),  # an empty override still overrides
    ],
)
def test_merge_config_later_layers_win(
    layers: tuple[dict[str, str], ...], expected: dict[str, str]
) -> None:
    before = [dict(layer) for layer in layers]
    assert merge_config(*layers) == expected
    assert [dict(layer) for layer in layers] == before  # inputs untouched


@pytest.mark.parametrize(
    ("pairs", "expected"),
    [
        ([], {}),
        (["A=1"], {"A": "1"}),
        (["A="], {"A": ""}),
        (["URL=http://x/?a=b&c=d"], {"URL": "http://x/?a=b&c=d"}),  # split on the first =
        (["_PRIVATE=1", "a_b9=x"], {"_PRIVATE": "1", "a_b9": "x"}),
        ([" KEY =  spaced "], {"KEY": "  spaced "}),  # key trimmed, value kept verbatim
        (["A=1", "A=2"], {"A": "2"}),  # the last --set wins, like merge_config
    ],
)
def test_parse_assignments_accepts(pairs: list[str], expected: dict[str, str]) -> None:
    assert parse_assignments(pairs) == expected


@pytest.mark.parametrize(
    ("pairs", "needle"),
    [
        (["NOEQUALS"], "expects KEY=VALUE, got 'NOEQUALS'"),
        (["=value"], "expects KEY=VALUE, got '=value'"),
        (["  =value"], "expects KEY=VALUE"),
        (["A=1", "broken"], "got 'broken'"),
        (["1ABC=x"], "key '1ABC' is not a valid environment variable name"),
        (["A-B=x"], "key 'A-B'"),
        (["A B=x"], "key 'A B'"),
        (["A.B=x"], "key 'A.B'"),
    ],
)
def test_parse_assignments_rejects_naming_the_pair(pairs: list[str], needle: str) -> None:
    with pytest.raises(ValueError, match=re.escape(needle)):
        parse_assignments(pairs)


@pytest.mark.parametrize("pair", ["ÄPFEL=1", "A²=1", "Ж=1", "A٣=1"])
def test_parse_assignments_rejects_non_portable_names(pair: str) -> None:
    with pytest.raises(ValueError, match="not a valid environment variable name"):
        parse_assignments([pair])


@given(st.dictionaries(env_names, st.text(max_size=20).filter(lambda v: "\x00" not in v)))
def test_parse_assignments_round_trips(config: dict[str, str]) -> None:
    assert parse_assignments([f"{k}={v}" for k, v in config.items()]) == config


# --- who may set what -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "family"),
    [
        # the loader
        ("LD_PRELOAD", "dynamic loader"),
        ("LD_LIBRARY_PATH", "dynamic loader"),
        ("LD_AUDIT", "dynamic loader"),
        ("LD_ANYTHING_NEW", "dynamic loader"),  # a family, not a list: future names too
        ("DYLD_INSERT_LIBRARIES", "macOS dynamic loader"),
        ("GLIBC_TUNABLES", "tunables"),
        ("GCONV_PATH", "iconv"),
        ("MALLOC_TRACE", "allocator"),
        # interpreters
        ("PYTHONPATH", "Python"),
        ("PYTHONSTARTUP", "Python"),
        ("PYTHONHOME", "Python"),
        ("PYTHONINSPECT", "Python"),
        ("PYTHONBREAKPOINT", "Python"),
        ("PYTHONWARNINGS", "Python"),
        ("NODE_OPTIONS", "Node.js"),
        ("NODE_PATH", "Node.js"),
        ("PERL5LIB", "Perl"),
        ("PERL5OPT", "Perl"),
        ("RUBYOPT", "Ruby"),
        ("RUBYLIB", "Ruby"),
        ("JAVA_TOOL_OPTIONS", "JVM"),
        ("_JAVA_OPTIONS", "JVM"),
        # the shell and the search path
        ("PATH", "search path"),
        ("BASH_ENV", "bash"),
        ("ENV", "interactive sh"),
        ("IFS", "splits words"),
        ("SHELLOPTS", "shell options"),
        ("PS4", "trace prompt"),
        # programs run on the process's behalf, and where their configuration is read
        ("BROWSER", "webbrowser"),
        ("GIT_SSH_COMMAND", "git"),
        ("GIT_CONFIG_COUNT", "git"),
        ("XDG_CONFIG_HOME", "configuration"),
        ("HOME", "site-packages"),
        ("TMPDIR", "temporary files"),
        # case does not matter
        ("Path", "search path"),
        ("ld_preload", "dynamic loader"),
        ("PythonPath", "Python"),
    ],
)
def test_protected_names_say_which_family_they_belong_to(name: str, family: str) -> None:
    reason = protected_reason(name)
    assert reason is not None and family in reason


@pytest.mark.parametrize(
    "name",
    [
        "GREETING",
        "DATABASE_URL",
        "NODE_ENV",  # application config, not a Node.js flag
        "LOG_LEVEL",
        "JAVA_HOME_HINT",
        "MY_PATH",
        "PATHS",  # only PATH itself chooses programs
        "HOMEPAGE",
        "LANG",
        "TZ",
        "PORT",
        "CONVEYOR_FEATURE",
        "GITHUB_URL",  # GIT_ is a family; GITHUB_ is not in it
        "TMP",
    ],
)
def test_ordinary_config_is_not_protected(name: str) -> None:
    assert protected_reason(name) is None


@pytest.mark.parametrize(
    ("names", "allowed", "refused"),
    [
        ([], [], []),
        (["GREETING", "DB_URL"], [], []),
        (["PATH"], [], ["PATH"]),
        (["PYTHONPATH", "GREETING", "LD_PRELOAD"], [], ["LD_PRELOAD", "PYTHONPATH"]),
        (["PYTHONPATH"], ["PYTHONPATH"], []),
        # an allowance is exact: one interpreter variable does not open the family
        (["PYTHONSTARTUP"], ["PYTHONPATH"], ["PYTHONSTARTUP"]),
        (["PYTHONPATH", "PATH"], ["PYTHONPATH"], ["PATH"]),
        (["Path"], ["PATH"], ["Path"]),  # nor another spelling
    ],
)
def test_refused_overrides_honours_the_environments_allowance(
    names: list[str], allowed: list[str], refused: list[str]
) -> None:
    assert list(refused_overrides(names, allowed)) == refused


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"A=B": "x"}, "'A=B' is not a valid environment variable name"),
        ({"": "x"}, "'' is not a valid"),
        ({"A\x00": "x"}, "is not a valid"),
        ({"A": "x\x00y"}, "config value of A must be text without NUL"),
        ({"A": 3}, "config value of A must be text"),
        ({3: "x"}, "3 is not a valid"),
    ],
)
def test_validate_overrides_refuses_what_cannot_be_an_environment(
    overrides: dict[object, object], needle: str
) -> None:
    with pytest.raises(UsageError, match=re.escape(needle)):
        validate_overrides(overrides)  # type: ignore[arg-type]


def test_validate_overrides_keeps_equals_signs_in_values() -> None:
    assert validate_overrides({"URL": "http://x/?a=b"}) == {"URL": "http://x/?a=b"}
