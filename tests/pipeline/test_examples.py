"""examples/pipelines: fourteen services extending one template all run; the template rules.

Three services are committed; the test copies the directory and adds eleven more like them,
so what is exercised is the committed template and tools, at the issue's scale.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conveyor.config.loader import load_project
from conveyor.config.pipeline import PipelineSpec
from conveyor.pipeline.plan import RunContext
from conveyor.pipeline.runner import run_pipeline

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "pipelines"
COMMITTED = ("billing", "catalog", "search")
SERVICES = 14
SMALL = RunContext(extra_vars={"deps_size": "2"})  # a tiny stand-in install keeps this fast


@pytest.fixture
def fleet(tmp_path: Path) -> Path:
    root = tmp_path / "pipelines"
    shutil.copytree(EXAMPLES, root)
    for index in range(SERVICES - len(COMMITTED)):
        name = f"service-{index:02d}"
        shutil.copytree(root / "billing", root / name)
        config = root / name / "conveyor.yaml"
        config.write_text(config.read_text().replace("billing", name))
    return root


def load_pipeline(config: Path) -> PipelineSpec | None:
    return load_project(config).config.pipeline


def services(root: Path) -> list[Path]:
    return sorted(path.parent for path in root.glob("*/conveyor.yaml"))


def run_all(root: Path) -> dict[str, dict[str, str]]:
    outcome: dict[str, dict[str, str]] = {}
    for service in services(root):
        spec = load_pipeline(service / "conveyor.yaml")
        assert spec is not None, service
        result = run_pipeline(spec, service, context=SMALL, cache_dir=root / ".cache")
        assert result.result == "success", [(j.name, j.reason, j.log) for j in result.jobs]
        outcome[service.name] = {job.name: job.result for job in result.jobs}
    return outcome


def test_every_service_runs_the_template_and_a_change_to_it_reaches_all(fleet: Path) -> None:
    assert len(services(fleet)) == SERVICES
    first = run_all(fleet)
    assert set(first) == {path.name for path in services(fleet)}
    for name, jobs in first.items():
        expected = ["deps", "lint", "test", "build"] + (["index"] if name == "search" else [])
        assert list(jobs) == expected and set(jobs.values()) == {"success"}, name
        assert (fleet / name / "dist" / "app.tar").is_file()

    template = fleet / "template.yaml"
    template.write_text(
        template.read_text().replace(
            'run: "python3 -m py_compile app.py"',
            'run: "python3 -m py_compile app.py && echo checked > lint.ok"',
        )
        + '  audit:\n    needs: [build]\n    run: "echo audited > audit.ok"\n'
    )
    second = run_all(fleet)
    for name, jobs in second.items():
        assert jobs["audit"] == "success", name
        assert (fleet / name / "lint.ok").is_file() and (fleet / name / "audit.ok").is_file()


def test_search_overrides_only_what_it_names(fleet: Path) -> None:
    search = load_pipeline(fleet / "search" / "conveyor.yaml")
    billing = load_pipeline(fleet / "billing" / "conveyor.yaml")
    assert search is not None and billing is not None
    assert search.vars["deps_size"] == "300" and billing.vars["deps_size"] == "250"
    assert {k: v for k, v in search.jobs.items() if k != "index"} == billing.jobs
    result = run_pipeline(search, fleet / "search", context=SMALL)
    assert result.job("index").log.startswith("index built for sha256:")


def test_the_shop_pipeline_builds_each_service_once_and_deploys_it_in_order() -> None:
    from conveyor.pipeline.plan import build_plan

    config = EXAMPLES.parent / "shop" / "conveyor.yaml"
    project = load_project(config)
    spec = load_pipeline(config)
    assert spec is not None
    plan = build_plan(spec)
    deploys = [job for job in plan.jobs if job.spec.deploy is not None]
    for job in deploys:
        assert job.service in project.config.services
        assert job.build_job == f"build-{job.service}"
        assert job.spec.deploy is not None
        assert job.spec.deploy.env in project.config.environments
    assert [(j.service, j.spec.deploy.env) for j in deploys if j.spec.deploy] == [
        ("pricing", "dev"),
        ("catalog", "dev"),
        ("pricing", "staging"),
        ("catalog", "staging"),
    ]
