"""The ``pipeline:`` block read with conveyor.yaml: its mistakes explained like any other.

Each broken case is a real conveyor.yaml through ``parse_config``, so what is checked is what
``conveyor validate`` prints: the line, the dotted field, the message and a hint that names
the fix (a "did you mean", an example, or the allowed values).
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from conveyor.config import parse_config
from conveyor.config.pipeline import PipelineSpec
from conveyor.errors import ConfigError, ConfigProblem

PROJECT = """\
project: shop
services:
  catalog:
    build: {run: make, outputs: [app/]}
    run: python3 app.py
environments:
  dev:
pipeline:
  jobs:
"""
JOBS = PROJECT.count("\n") + 1
"""The line the first job text starts at."""


def problems(jobs: str) -> list[ConfigProblem]:
    with pytest.raises(ConfigError) as caught:
        parse_config(PROJECT + jobs)
    return caught.value.problems


def pipeline(jobs: str) -> PipelineSpec:
    spec = parse_config(PROJECT + jobs).pipeline
    assert spec is not None
    return spec


def test_a_misspelled_key_a_bad_duration_and_an_unknown_gate_are_reported_together() -> None:
    found = problems(
        "    build: {run: make}\n"
        "    test:\n"
        "      needz: [build]\n"
        "      run: make test\n"
        "      timeout: forever\n"
        "    scan:\n"
        "      gate: secert-scan\n"
    )
    assert [(p.file, p.line, p.field) for p in found] == [
        ("conveyor.yaml", JOBS + 2, "pipeline.jobs.test.needz"),
        ("conveyor.yaml", JOBS + 4, "pipeline.jobs.test.timeout"),
        ("conveyor.yaml", JOBS + 6, "pipeline.jobs.scan.gate"),
    ]
    needz, timeout, gate = found
    assert needz.message == "unknown field 'needz'"
    assert needz.hint is not None
    assert needz.hint.startswith("did you mean 'needs'? e.g. needs: [build]; allowed fields: ")
    assert timeout.message == "expected a duration like 30s or 2m, got 'forever'"
    assert timeout.hint is not None and "30s, 2m, 1h" in timeout.hint
    assert gate.message == "unknown gate 'secert-scan'"
    assert gate.hint == (
        "did you mean 'secret-scan'? known gates: audit, migration-safety, secret-scan"
    )


# (jobs text, line offset from JOBS, field, message fragment, hint fragment)
BROKEN: list[tuple[str, int, str, str, str]] = [
    (
        "    a: {run: x, iff: x}\n",
        0,
        "pipeline.jobs.a.iff",
        "unknown field 'iff'",
        "did you mean 'if'? e.g. if: branch == 'main'",
    ),
    (
        "    a: {run: x}\n  max_paralel: 2\n",
        1,
        "pipeline.max_paralel",
        "unknown field 'max_paralel'",
        "did you mean 'max_parallel'? e.g. max_parallel: 4",
    ),
    (
        "    a: {run: x}\n  extnds: ../t.yaml\n",
        1,
        "pipeline.extnds",
        "unknown field 'extnds'",
        "did you mean 'extends'?",
    ),
    (
        "    a: {deploy: {env: dev, timout: 1m}}\n",
        0,
        "pipeline.jobs.a.deploy.timout",
        "unknown field 'timout'",
        "did you mean 'timeout'?",
    ),
    (
        "    a: {run: x, retries: 11}\n",
        0,
        "pipeline.jobs.a.retries",
        "must be at most 10, got 11",
        "use a whole number from 0 to 10, e.g. retries: 0",
    ),
    (
        "    a: {run: x, retries: true}\n",
        0,
        "pipeline.jobs.a.retries",
        "expected a whole number, got true",
        "from 0 to 10",
    ),
    (
        "    a: {run: x}\n  max_parallel: 0\n",
        1,
        "pipeline.max_parallel",
        "must be at least 1, got 0",
        "e.g. max_parallel: 4",
    ),
    (
        "    a: {run: x, timeout: 0}\n",
        0,
        "pipeline.jobs.a.timeout",
        "must be longer than 0",
        "1s",
    ),
    (
        "    a: {deploy: {env: dev, timeout: soon}}\n",
        0,
        "pipeline.jobs.a.deploy.timeout",
        "expected a duration",
        "30s, 2m",
    ),
    (
        "    a: {run: x, gate: zzzzzzzz}\n",
        0,
        "pipeline.jobs.a.gate",
        "unknown gate 'zzzzzzzz'",
        "known gates: audit, migration-safety, secret-scan (a gate of your own",
    ),
    (
        "    a: {}\n",
        0,
        "pipeline.jobs.a",
        "a job needs one of run, gate, build or deploy",
        "e.g. run: make test",
    ),
    (
        "    a: {run: x, gate: audit}\n",
        0,
        "pipeline.jobs.a",
        "this one has run and gate",
        "split it",
    ),
    (
        "    a: {run: x, paths: [src]}\n",
        0,
        "pipeline.jobs.a",
        "'paths' and 'allow' belong to a gate job",
        "gate: secret-scan",
    ),
    (
        "    a: {build: catalog, matrix: {x: [1]}}\n",
        0,
        "pipeline.jobs.a",
        "a build job has no matrix",
        "remove matrix:",
    ),
    (
        "    a:\n      run: x\n      env: {1BAD: x}\n",
        2,
        "pipeline.jobs.a.env.1BAD",
        "not a valid environment variable name",
        "e.g. GREETING",
    ),
    (
        "    a:\n      run: x\n      secrets: {T: {env: A, file: /x}}\n",
        2,
        "pipeline.jobs.a.secrets.T",
        "exactly one source, this one has both",
        "{env: CI_TOKEN}",
    ),
    (
        "    a:\n      run: x\n      reports:\n        junit: [/abs.xml]\n",
        3,
        "pipeline.jobs.a.reports.junit[0]",
        "must be relative to the working directory",
        "e.g. reports/junit.xml",
    ),
    (
        "    a: {run: x, cache: {key: k, paths: [a/../../x]}}\n",
        0,
        "pipeline.jobs.a.cache.paths[0]",
        "without '..'",
        "relative to the project directory",
    ),
    (
        "    a: {run: [make, 1]}\n",
        0,
        "pipeline.jobs.a.run",
        "expected a command (a string or a list of strings), got a list",
        "[make, test]",
    ),
    (
        "    a: {run: []}\n",
        0,
        "pipeline.jobs.a.run",
        "expected a command",
        "make test",
    ),
    (
        "    a: {run: x}\n  vars: {python: 3.11}\n",
        1,
        "pipeline.vars.python",
        "expected text, got 3.11",
        'quote it to keep it text, e.g. python: "3.11"',
    ),
    (
        "    Bad Name: {run: x}\n",
        0,
        "pipeline.jobs.Bad Name",
        "'Bad Name' is not a job name",
        "e.g. unit-tests",
    ),
    (
        "    a: {build: {servce: catalog}}\n",
        0,
        "pipeline.jobs.a.build.servce",
        "unknown field 'servce'",
        "did you mean 'service'? e.g. service: catalog",
    ),
    ("", -1, "pipeline.jobs", "expected a mapping", "e.g. jobs: {test: {run: make test}}"),
    ("    a: null\n", -1, "pipeline.jobs", "must not be empty", "add at least one entry"),
]


@pytest.mark.parametrize(
    ("jobs", "offset", "field", "message", "hint"), BROKEN, ids=[case[2] for case in BROKEN]
)
def test_a_broken_pipeline_is_located_and_explained(
    jobs: str, offset: int, field: str, message: str, hint: str
) -> None:
    found = [p for p in problems(jobs) if p.field == field]
    assert found, f"no problem for {field!r} in {[p.render() for p in problems(jobs)]}"
    problem = found[0]
    assert problem.line == JOBS + offset, problem.render()
    assert message in problem.message, problem.render()
    assert hint in (problem.hint or ""), problem.render()


def test_a_pipeline_that_is_not_a_mapping_says_what_it_takes() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(PROJECT.replace("pipeline:\n  jobs:\n", "pipeline: [a]\n"))
    (problem,) = caught.value.problems
    assert (problem.line, problem.field) == (JOBS - 2, "pipeline")
    assert problem.hint is not None and "extends, jobs, vars" in problem.hint


@pytest.mark.parametrize(
    ("written", "seconds"),
    [
        (90, 90.0),
        (1.5, 1.5),
        ("90", 90.0),
        ("90s", 90.0),
        ("10m", 600.0),
        ("1h", 3600.0),
        ("500ms", 0.5),
        ("1m30s", 90.0),
        ("10 m", 600.0),
        (" 2s ", 2.0),
    ],
)
def test_timeouts_use_the_config_duration_syntax(written: object, seconds: float) -> None:
    text = f"    a: {{run: x, timeout: {written!r}}}\n".replace("'", '"')
    assert pipeline(text).jobs["a"].timeout == pytest.approx(seconds)
    deploy = f"    a: {{deploy: {{env: dev, timeout: {written!r}}}}}\n".replace("'", '"')
    job = pipeline(deploy).jobs["a"].deploy
    assert job is not None and job.timeout == pytest.approx(seconds)


def test_shorthand_forms_read_as_their_long_forms() -> None:
    spec = pipeline(
        "    package: {build: catalog, needs: test}\n"
        "    test: {run: [make, test], if: \"branch == 'main'\"}\n"
        "    ship: {deploy: {env: dev}, needs: [package]}\n"
        "    scan: {gate: secret-scan, paths: [src/], allow: ['tests/*']}\n"
    )
    package, test, ship, scan = spec.jobs.values()
    assert package.build is not None and package.build.service == "catalog"
    assert (package.kind, package.needs) == ("build", ["test"])
    assert (test.kind, test.run, test.if_) == ("run", ["make", "test"], "branch == 'main'")
    assert ship.kind == "deploy" and ship.deploy is not None and ship.deploy.timeout == 3600.0
    assert (scan.kind, scan.paths, scan.allow) == ("gate", ["src/"], ["tests/*"])
    assert (spec.fail_fast, spec.max_parallel, spec.vars) == (True, None, {})


def test_the_models_validate_on_their_own_too() -> None:
    """The engine and its tests build specs directly; the same rules apply."""
    spec = PipelineSpec.model_validate({"jobs": {"a": {"run": "x", "if": "always()"}}})
    assert spec.jobs["a"].if_ == "always()"
    with pytest.raises(ValidationError, match="unknown gate 'secert-scan'"):
        PipelineSpec.model_validate({"jobs": {"a": {"gate": "secert-scan"}}})
    with pytest.raises(ValidationError, match="expected a duration"):
        PipelineSpec.model_validate({"jobs": {"a": {"run": "x", "timeout": "soon"}}})
