"""``flags:``/``segments:`` in conveyor.yaml and ``flags/*.yaml``: loaded, or located errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.config import load_project, parse_config
from conveyor.errors import ConfigError

BASE = """\
project: shop
services:
  web: {build: {run: "true", outputs: [app]}, run: "true"}
environments:
  staging: {}
  production: {}
"""

GOOD = (
    BASE
    + """\
segments:
  staff:
    when: [{attribute: email, op: ends_with, values: ["@corp.com"]}]
flags:
  new-checkout:
    description: the one-page checkout
    environments:
      staging: {on: true}
      production:
        on: true
        rules:
          - {segments: [staff], serve: "on"}
        rollout: {percentage: 25, variant: "on", stickiness: userId}
"""
)


def test_flags_and_segments_load() -> None:
    config = parse_config(GOOD)
    flags, segments = config.flag_set()
    flag = flags["new-checkout"]
    assert flag.state("production").rollout is not None
    assert flag.state("production").rollout.percentage == 25  # type: ignore[union-attr]
    assert flag.state("staging").on and not flag.state("dev").on
    assert set(segments) == {"staff"}


@pytest.mark.parametrize(
    ("tail", "line", "field", "words"),
    [
        (
            "flags:\n  f:\n    environments:\n      production:\n"
            "        rollout: {percentage: 250, variant: 'on'}\n",
            11,
            "flags.f.environments.production.rollout.percentage",
            "0 to 100",
        ),
        (
            "flags:\n  f:\n    environments:\n      prod: {on: true}\n",
            10,
            "flags.f.environments.prod",
            "unknown environment",
        ),
        (
            "flags:\n  f:\n    kind: string\n    variants: {a: x}\n    default: b\n",
            11,
            "flags.f.default",
            "not one of the flag's variants",
        ),
        (
            "flags:\n  f:\n    environments:\n      staging:\n        rules:\n"
            "          - when: [{attribute: email, op: matches, value: '(a+)+'}]\n"
            "            serve: 'on'\n",
            12,
            "flags.f.environments.staging.rules[0].when[0].values",
            "exponential",
        ),
        (
            "flags:\n  f:\n    environments:\n      staging:\n        rules:\n"
            "          - {segments: [nobody], serve: 'on'}\n",
            12,
            "flags.f.environments.staging.rules[0].segments[0]",
            "unknown segment",
        ),
    ],
)
def test_bad_flags_name_file_line_field_and_fix(
    tail: str, line: int, field: str, words: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(BASE + tail, "conveyor.yaml")
    [problem] = caught.value.problems
    assert (problem.file, problem.line, problem.field) == ("conveyor.yaml", line, field)
    assert words in problem.message and problem.hint


def test_a_flags_directory_is_merged_and_duplicates_are_named(tmp_path: Path) -> None:
    (tmp_path / "conveyor.yaml").write_text(GOOD)
    (tmp_path / "flags").mkdir()
    (tmp_path / "flags" / "search.yaml").write_text(
        "flags:\n  new-search:\n    kind: string\n    variants: {a: x, b: y}\n    default: a\n"
    )
    loaded = load_project(tmp_path)
    assert set(loaded.config.flags) == {"new-checkout", "new-search"}

    (tmp_path / "flags" / "twice.yaml").write_text(
        "flags:\n  new-checkout: {}\n  broken:\n    environments: {staging: {on: maybe}}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_project(tmp_path)
    where = {(Path(p.file).name, p.line, p.field) for p in caught.value.problems}
    assert ("twice.yaml", 2, "flags.new-checkout") in where
    assert ("twice.yaml", 4, "flags.broken.environments.staging.on") in where
    twice = next(p for p in caught.value.problems if p.field == "flags.new-checkout")
    assert "conveyor.yaml:" in twice.message
