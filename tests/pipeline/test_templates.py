"""``extends:`` resolution: the service wins, jobs merge by name, errors name the right file."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.config.loader import load_project
from conveyor.errors import ConfigError
from conveyor.pipeline.templates import load_pipeline, merge

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


def test_no_pipeline_is_none(tmp_path: Path) -> None:
    assert load_pipeline(write(tmp_path, "")) is None


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
    # the whole project still validates with a pipeline block in it
    assert load_project(config).config.pipeline is not None


def test_template_may_be_a_file_with_a_pipeline_key_and_may_extend(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text("pipeline:\n  jobs:\n    a: {run: 'true'}\n")
    template = "extends: ../base.yaml\njobs:\n  b: {run: 'true', needs: [a]}\n"
    spec = load_pipeline(write(tmp_path, "pipeline: {extends: ../shared/template.yaml}", template))
    assert spec is not None and list(spec.jobs) == ["a", "b"]


def test_error_in_template_names_the_template_file_and_line(tmp_path: Path) -> None:
    template = "jobs:\n  lint:\n    run: 'x'\n    retries: many\n"
    config = write(tmp_path, "pipeline: {extends: ../shared/template.yaml}", template)
    with pytest.raises(ConfigError) as caught:
        load_pipeline(config)
    (problem,) = caught.value.problems
    assert problem.file.endswith("template.yaml")
    assert problem.line == 4
    assert problem.field == "pipeline.jobs.lint.retries"


def test_error_in_service_names_the_service_file(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        "pipeline:\n  extends: ../shared/template.yaml\n  jobs:\n    test: {timeout: soon}\n",
    )
    with pytest.raises(ConfigError) as caught:
        load_pipeline(config)
    (problem,) = caught.value.problems
    assert problem.file == str(config)
    assert problem.line == 11
    assert "duration" in problem.message


@pytest.mark.parametrize(
    ("extends", "expected"),
    [("../missing.yaml", "not found"), ("../svc/conveyor.yaml", "extend each other")],
)
def test_bad_extends(tmp_path: Path, extends: str, expected: str) -> None:
    config = write(tmp_path, f"pipeline:\n  extends: {extends}\n  jobs: {{a: {{run: 'x'}}}}\n")
    if "svc/conveyor" in extends:
        (tmp_path / "svc" / "conveyor.yaml").write_text(
            PROJECT.format(pipeline="pipeline: {extends: ./conveyor.yaml}")
        )
    with pytest.raises(ConfigError) as caught:
        load_pipeline(config)
    assert expected in caught.value.message
    assert caught.value.problems[0].field == "pipeline.extends"


def test_broken_template_yaml_is_located(tmp_path: Path) -> None:
    config = write(tmp_path, "pipeline: {extends: ../shared/template.yaml}", "jobs:\n  a: [\n")
    with pytest.raises(ConfigError) as caught:
        load_pipeline(config)
    assert caught.value.problems[0].file.endswith("template.yaml")


def test_merge_replaces_lists_and_scalars() -> None:
    base = {"jobs": {"a": {"run": ["x"], "needs": ["b"]}}, "fail_fast": True}
    over = {"jobs": {"a": {"needs": []}}, "fail_fast": False}
    assert merge(base, over) == {"jobs": {"a": {"run": ["x"], "needs": []}}, "fail_fast": False}
