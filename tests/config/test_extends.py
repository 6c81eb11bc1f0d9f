"""``pipeline: {extends: ...}``: the service wins, jobs merge by name, errors name the right file.

Everything goes through ``load_project`` as a user's file would: templates are part of
reading conveyor.yaml, not a second reader.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.config.extends import MAX_TEMPLATE_DEPTH, merge
from conveyor.config.loader import load_project, parse_config
from conveyor.config.pipeline import PipelineSpec
from conveyor.config.source import read_yaml
from conveyor.errors import ConfigError, ConfigProblem

PROJECT = """\
project: svc
services:
  api:
    build: {{run: "true", outputs: [out/]}}
    run: "true"
environments:
  dev:
{pipeline}
"""
PIPELINE_LINE = 8
"""The line ``{pipeline}`` starts at in PROJECT."""

TEMPLATE = """\
vars: {python: "3.11"}
max_parallel: 2
jobs:
  lint:
    run: "echo lint"
  test:
    needs: [lint]
    run: "echo test"
    env: {A: "1", B: "2"}
  build:
    needs: [test]
    run: "echo build"
"""


def write(root: Path, pipeline: str, template: str = TEMPLATE) -> Path:
    (root / "shared").mkdir(parents=True, exist_ok=True)
    (root / "shared" / "template.yaml").write_text(template)
    (root / "svc").mkdir(exist_ok=True)
    config = root / "svc" / "conveyor.yaml"
    config.write_text(PROJECT.format(pipeline=pipeline))
    return config


def load_pipeline(config: Path) -> PipelineSpec | None:
    return load_project(config).config.pipeline


def problems(config: Path) -> list[ConfigProblem]:
    with pytest.raises(ConfigError) as caught:
        load_project(config)
    return caught.value.problems


def test_no_pipeline_is_none(tmp_path: Path) -> None:
    assert load_pipeline(write(tmp_path, "")) is None
    assert load_pipeline(write(tmp_path, "pipeline:")) is None


def test_service_overrides_template_and_jobs_merge_by_name(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        "pipeline:\n"
        "  extends: ../shared/template.yaml\n"
        "  vars: {extra: x}\n"
        "  jobs:\n"
        "    test: {run: 'pytest', env: {B: '3'}}\n"
        "    lint: null\n"
        "    deploy: {needs: [build], run: 'echo deploy'}\n",
    )
    spec = load_pipeline(config)
    assert spec is not None
    assert list(spec.jobs) == ["test", "build", "deploy"]
    assert spec.jobs["test"].run == "pytest"
    assert spec.jobs["test"].env == {"A": "1", "B": "3"}
    assert spec.jobs["test"].needs == ["lint"]  # kept from the template, now dangling
    assert spec.vars == {"python": "3.11", "extra": "x"}
    assert spec.max_parallel == 2


def test_a_null_job_is_dropped_without_a_template_too(tmp_path: Path) -> None:
    spec = load_pipeline(write(tmp_path, "pipeline:\n  jobs: {a: {run: x}, b: null}\n"))
    assert spec is not None and list(spec.jobs) == ["a"]


def test_template_may_be_a_file_with_a_pipeline_key_and_may_extend(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text("pipeline:\n  jobs:\n    a: {run: 'true'}\n")
    template = "extends: ../base.yaml\njobs:\n  b: {run: 'true', needs: [a]}\n"
    spec = load_pipeline(write(tmp_path, "pipeline: {extends: ../shared/template.yaml}", template))
    assert spec is not None and list(spec.jobs) == ["a", "b"]


# (template, service block, (file, line, field, message)) -- "T" is the template, "S" the service
ORIGINS: list[tuple[str, str, tuple[str, int, str, str]]] = [
    (
        "jobs:\n  lint:\n    run: 'x'\n    retries: many\n",
        "pipeline: {extends: ../shared/template.yaml}",
        ("T", 4, "pipeline.jobs.lint.retries", "expected a whole number, got 'many'"),
    ),
    (
        "jobs:\n  lint:\n    run: 'x'\n    neds: [a]\n",
        "pipeline: {extends: ../shared/template.yaml}",
        ("T", 4, "pipeline.jobs.lint.neds", "unknown field 'neds'"),
    ),
    (
        TEMPLATE,
        "pipeline:\n  extends: ../shared/template.yaml\n  jobs:\n    test: {timeout: soon}\n",
        ("S", PIPELINE_LINE + 3, "pipeline.jobs.test.timeout", "expected a duration"),
    ),
    (  # a value the service did not touch is still the template's, in a merged job
        TEMPLATE.replace('env: {A: "1", B: "2"}', 'env: {A: "1", b-2: "2"}'),
        "pipeline:\n  extends: ../shared/template.yaml\n  jobs:\n    test: {env: {C: '3'}}\n",
        ("T", 9, "pipeline.jobs.test.env.b-2", "not a valid environment variable name"),
    ),
    (  # the service's own list replaces the template's, and is located in the service
        TEMPLATE,
        "pipeline:\n  extends: ../shared/template.yaml\n  jobs:\n    build:\n      run: [a, 1]\n",
        ("S", PIPELINE_LINE + 4, "pipeline.jobs.build.run", "expected a command"),
    ),
    (  # a job the merge leaves without a kind is located at the service's mention of it
        TEMPLATE,
        "pipeline:\n  extends: ../shared/template.yaml\n  jobs:\n    build: {run: null}\n",
        ("S", PIPELINE_LINE + 3, "pipeline.jobs.build", "a job needs one of run, gate"),
    ),
]


@pytest.mark.parametrize(("template", "block", "expected"), ORIGINS)
def test_each_problem_is_located_where_its_value_was_written(
    tmp_path: Path, template: str, block: str, expected: tuple[str, int, str, str]
) -> None:
    config = write(tmp_path, block, template)
    where, line, field, message = expected
    (problem,) = problems(config)
    file = (tmp_path / "shared" / "template.yaml").resolve() if where == "T" else config
    assert (problem.file, problem.line, problem.field) == (str(file), line, field)
    assert message in problem.message


def test_problems_in_service_and_template_come_together_service_first(tmp_path: Path) -> None:
    template = "jobs:\n  lint:\n    run: 'x'\n    retries: many\n"
    config = write(
        tmp_path,
        "pipeline:\n  extends: ../shared/template.yaml\n  fail_fast: maybe\n",
        template,
    )
    config.write_text(config.read_text().replace("  dev:\n", "  dev:\n    stratgy: recreate\n"))
    found = [(Path(p.file).name, p.line, p.field) for p in problems(config)]
    assert found == [
        ("conveyor.yaml", 8, "environments.dev.stratgy"),
        ("conveyor.yaml", 11, "pipeline.fail_fast"),
        ("template.yaml", 4, "pipeline.jobs.lint.retries"),
    ]


@pytest.mark.parametrize(
    ("extends", "expected"),
    [
        ("../missing.yaml", "not found"),
        ("../svc/conveyor.yaml", "extend each other"),
        ("''", "expected a path to a template file"),
        ("[a, b]", "expected a path to a template file"),
        ('"a\\0b"', "is not a usable path"),
        ("..", "not found"),  # a directory
    ],
)
def test_bad_extends(tmp_path: Path, extends: str, expected: str) -> None:
    config = write(tmp_path, f"pipeline:\n  extends: {extends}\n  jobs: {{a: {{run: 'x'}}}}\n")
    if "svc/conveyor" in extends:
        config.write_text(PROJECT.format(pipeline="pipeline: {extends: ./conveyor.yaml}"))
    (problem,) = problems(config)
    assert expected in problem.message
    assert (problem.file, problem.line, problem.field) == (
        str(config),
        PIPELINE_LINE + (0 if "svc/conveyor" in extends else 1),
        "pipeline.extends",
    )
    assert problem.hint


def test_a_broken_template_does_not_hide_the_rest_of_the_file(tmp_path: Path) -> None:
    config = write(tmp_path, "pipeline: {extends: ../missing.yaml}")
    config.write_text(config.read_text().replace('\n    run: "true"', "\n    run: []"))
    found = [(p.line, p.field) for p in problems(config)]
    assert found == [(5, "services.api.run"), (PIPELINE_LINE, "pipeline.extends")]


def test_broken_template_yaml_is_located_in_the_template(tmp_path: Path) -> None:
    config = write(tmp_path, "pipeline: {extends: ../shared/template.yaml}", "jobs:\n  a: [\n")
    (problem,) = problems(config)
    assert problem.file.endswith("template.yaml")
    assert problem.field == "(yaml)" and problem.line is not None


@pytest.mark.parametrize("template", ["", "- a\n- b\n", "pipeline: 3\n"])
def test_a_template_must_be_a_pipeline_block(tmp_path: Path, template: str) -> None:
    config = write(tmp_path, "pipeline: {extends: ../shared/template.yaml}", template)
    (problem,) = problems(config)
    assert problem.file.endswith("template.yaml")
    assert "a template is a mapping" in problem.message


def test_templates_nest_at_most_eight_deep(tmp_path: Path) -> None:
    def chain(depth: int) -> Path:
        for level in range(1, depth + 1):
            below = f"extends: t{level + 1}.yaml\n" if level < depth else ""
            (tmp_path / f"t{level}.yaml").write_text(below + f"jobs: {{j{level}: {{run: x}}}}\n")
        config = tmp_path / "conveyor.yaml"
        config.write_text(PROJECT.format(pipeline="pipeline: {extends: t1.yaml}"))
        return config

    spec = load_pipeline(chain(MAX_TEMPLATE_DEPTH))
    assert spec is not None and len(spec.jobs) == MAX_TEMPLATE_DEPTH
    (problem,) = problems(chain(MAX_TEMPLATE_DEPTH + 1))
    assert "nest more than 8 deep" in problem.message
    assert problem.file == str((tmp_path / f"t{MAX_TEMPLATE_DEPTH}.yaml").resolve())


def test_template_size_is_bounded_like_conveyor_yaml(tmp_path: Path) -> None:
    bomb = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    bomb += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 12)]
    config = write(tmp_path, "pipeline: {extends: ../shared/template.yaml}", "\n".join(bomb))
    (problem,) = problems(config)
    assert problem.file.endswith("template.yaml") and "too large" in problem.message


def test_text_without_a_file_may_extend_only_absolute_paths(tmp_path: Path) -> None:
    (tmp_path / "template.yaml").write_text(TEMPLATE)
    absolute = PROJECT.format(pipeline=f"pipeline: {{extends: {tmp_path / 'template.yaml'}}}")
    spec = parse_config(absolute).pipeline
    assert spec is not None and list(spec.jobs) == ["lint", "test", "build"]
    relative = PROJECT.format(pipeline="pipeline: {extends: template.yaml}")
    with pytest.raises(ConfigError) as caught:
        parse_config(relative)
    (problem,) = caught.value.problems
    assert (problem.file, problem.line, problem.field) == (
        "conveyor.yaml",
        PIPELINE_LINE,
        "pipeline.extends",
    )
    assert "not read from a file" in problem.message
    spec = parse_config(relative, str(tmp_path / "conveyor.yaml")).pipeline
    assert spec is not None and list(spec.jobs) == ["lint", "test", "build"]


def test_merge_replaces_lists_and_scalars_and_keeps_origins() -> None:
    base = read_yaml("jobs:\n  a:\n    run: [x]\n    needs: [b]\nfail_fast: true\n", "base")
    over = read_yaml("jobs:\n  a:\n    needs: []\nfail_fast: false\n", "over")
    merged = merge(base, over)
    assert merged.plain() == {"jobs": {"a": {"run": ["x"], "needs": []}}, "fail_fast": False}
    origins = {path: (o.file, o.line) for path, o in merged.origins().items()}
    assert origins[("jobs", "a", "run")] == ("base", 3)
    assert origins[("jobs", "a", "run", 0)] == ("base", 3)
    assert origins[("jobs", "a", "needs")] == ("over", 3)
    assert origins[("jobs", "a")] == ("over", 2)
    assert origins[("fail_fast",)] == ("over", 4)
