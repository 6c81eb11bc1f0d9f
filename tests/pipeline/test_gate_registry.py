"""The gate registry: gates from code and from entry points, and the migration-safety hook.

Everything runs through the real runner on real files; plugins are real distributions (a
``*.dist-info`` directory with ``entry_points.txt``) put on ``sys.path``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pydantic import ValidationError

from conveyor.config.gates import BUILTIN_GATE_NAMES
from conveyor.config.gates import gate_names as config_gate_names
from conveyor.errors import ConveyorError
from conveyor.pipeline import JobResult, PipelineSpec, RunResult, run_pipeline
from conveyor.pipeline.gates import (
    BUILTIN_GATES,
    Finding,
    GateEvidence,
    GatePluginError,
    GateRequest,
    forget_plugins,
    gate_names,
    register_gate,
    register_migration_checker,
    run_gate,
    unregister_gate,
    unregister_migration_checker,
)

pytestmark = pytest.mark.integration


@dataclass
class Registry:
    """Registers through the public API and remembers what to undo."""

    gates: list[str] = field(default_factory=list)
    checkers: list[str] = field(default_factory=list)
    modules: list[str] = field(default_factory=list)

    def gate(self, name: str, gate: object) -> None:
        register_gate(name, gate)  # type: ignore[arg-type]
        self.gates.append(name)

    def checker(self, check: object, name: str | None = None) -> str:
        registered = register_migration_checker(check, name=name)  # type: ignore[arg-type]
        self.checkers.append(registered)
        return registered


@pytest.fixture
def registry() -> Iterator[Registry]:
    forget_plugins()
    undo = Registry()
    yield undo
    for name in undo.gates:
        unregister_gate(name)
    for name in undo.checkers:
        unregister_migration_checker(name)
    for module in undo.modules:
        sys.modules.pop(module, None)
    forget_plugins()


def distribution(
    site: Path, registry: Registry, module: str, source: str, entry_points: str
) -> None:
    """A real installed distribution: a module and its dist-info, on sys.path."""
    site.mkdir(exist_ok=True)
    (site / f"{module}.py").write_text(source)
    info = site / f"{module}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(entry_points)
    registry.modules.append(module)


def run(
    root: Path, jobs: dict[str, dict[str, object]], environ: dict[str, str] | None = None
) -> RunResult:
    spec = PipelineSpec.model_validate({"jobs": jobs, "fail_fast": False})
    environ = {"PATH": os.environ["PATH"], **(environ or {})}
    return run_pipeline(spec, root, environ=environ, kill_grace=0.5)


NO_SQUAWK = {"CONVEYOR_SQUAWK": ""}
"""The built-in review with no squawk to run (as on a machine without squawk-cli)."""


def no_todo(request: GateRequest) -> GateEvidence:
    """A project gate: any ``TODO`` under ``paths`` fails."""
    findings = []
    for entry in request.paths:
        for path in sorted((request.workdir / entry).rglob("*.py")):
            for number, line in enumerate(path.read_text().splitlines(), start=1):
                if "TODO" in line:
                    shown = path.relative_to(request.workdir).as_posix()
                    findings.append(Finding(shown, number, "todo"))
    result = "failure" if findings else "success"
    return GateEvidence("no-todo", result, f"{len(findings)} TODOs", findings=tuple(findings))


def drop_column(request: GateRequest, migrations: tuple[str, ...]) -> GateEvidence:
    """A migration checker: dropping a column breaks the version still serving traffic."""
    findings = [
        Finding(name, number, "drop-column")
        for name in migrations
        for number, line in enumerate((request.workdir / name).read_text().splitlines(), 1)
        if "DROP COLUMN" in line.upper()
    ]
    result = "failure" if findings else "success"
    return GateEvidence(
        "", result, f"{len(findings)} destructive statements", findings=tuple(findings)
    )


# --- gates registered from code -------------------------------------------------------------


def test_a_gate_registered_from_code_is_valid_and_runs_through_the_runner(
    tmp_path: Path, registry: Registry
) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "app.py").write_text("x = 1\n# TODO: remove\n")
    (tmp_path / "other.py").write_text("# TODO: not under paths\n")
    registry.gate("no-todo", no_todo)
    assert "no-todo" in gate_names()
    result = run(
        tmp_path,
        {
            "todo": {"gate": "no-todo", "paths": ["src"]},
            "after": {"needs": ["todo"], "run": "true"},
        },
    )
    job = result.job("todo")
    assert (result.result, job.result, job.reason) == ("failure", "failure", "1 TODOs")
    assert job.gate is not None and job.gate.findings == (Finding("src/app.py", 2, "todo"),)
    assert "src/app.py:2: todo" in job.log
    assert result.job("after").result == "skipped"
    (tmp_path / "src" / "app.py").write_text("x = 1\n")
    assert run(tmp_path, {"todo": {"gate": "no-todo", "paths": ["src"]}}).result == "success"


def test_an_unknown_gate_is_a_validation_error_listing_the_known_ones(
    registry: Registry,
) -> None:
    with pytest.raises(ValidationError, match="unknown gate 'no-todo'") as caught:
        PipelineSpec.model_validate({"jobs": {"j": {"gate": "no-todo"}}})
    [error] = caught.value.errors()
    assert "known gates: audit, migration-safety, secret-scan" in str(error.get("ctx"))
    registry.gate("no-todo", no_todo)
    assert "no-todo" in config_gate_names()
    PipelineSpec.model_validate({"jobs": {"j": {"gate": "no-todo"}}})
    unregister_gate("no-todo")
    assert "no-todo" not in config_gate_names()
    with pytest.raises(ValidationError, match="unknown gate 'no-todo'"):
        PipelineSpec.model_validate({"jobs": {"j": {"gate": "no-todo"}}})


def test_config_and_registry_know_the_same_built_in_gates() -> None:
    """conveyor.yaml is validated against config's names; each must have code to run."""
    assert sorted(BUILTIN_GATES) == list(BUILTIN_GATE_NAMES)
    assert gate_names is config_gate_names  # one function, so one answer


def test_a_built_in_or_taken_name_cannot_be_registered_again(registry: Registry) -> None:
    with pytest.raises(ConveyorError, match="'secret-scan' is already registered"):
        registry.gate("secret-scan", no_todo)
    registry.gate("no-todo", no_todo)
    with pytest.raises(ConveyorError, match="'no-todo' is already registered"):
        registry.gate("no-todo", no_todo)


def test_a_gate_that_raises_or_returns_nonsense_fails_its_job_not_the_run(
    tmp_path: Path, registry: Registry
) -> None:
    def crashes(request: GateRequest) -> GateEvidence:
        raise RuntimeError("disk on fire")

    def nonsense(request: GateRequest) -> GateEvidence:
        return GateEvidence("nonsense", "passed-ish", "fine, probably")

    registry.gate("crashes", crashes)
    registry.gate("nonsense", nonsense)
    result = run(
        tmp_path, {"a": {"gate": "crashes"}, "b": {"gate": "nonsense"}, "c": {"run": "true"}}
    )
    assert result.job("a").result == "failure"
    assert result.job("a").reason == "gate 'crashes' crashed: RuntimeError: disk on fire"
    assert result.job("b").result == "failure"
    assert result.job("b").reason == "gate 'nonsense' returned no valid verdict ('passed-ish')"
    assert result.job("c").result == "success"


# --- migration-safety -----------------------------------------------------------------------


def migrations_tree(root: Path) -> Path:
    """Alembic under migrations/, a Django app, raw SQL, and files that are not migrations."""
    files = {
        "migrations/env.py": "from alembic import context\n",
        "migrations/versions/__init__.py": "",
        "migrations/versions/1a2b_add_email.py": 'op.execute("ALTER TABLE users ADD email")\n',
        "migrations/versions/3c4d_drop_name.py": (
            'def upgrade():\n    op.execute("ALTER TABLE users DROP COLUMN name")\n'
        ),
        "app/migrations/__init__.py": "",
        "app/migrations/0001_initial.py": "operations = []\n",
        "app/views.py": "# DROP COLUMN in a comment is not a migration\n",
        "db/001_init.sql": "CREATE TABLE t (a int);\nalter table t drop column a;\n",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_migration_safety_without_migrations_passes(tmp_path: Path, registry: Registry) -> None:
    (tmp_path / "app.py").write_text("print('no database here')\n")
    result = run(tmp_path, {"m": {"gate": "migration-safety"}})
    job = result.job("m")
    assert (result.result, job.result) == ("success", "success")
    assert job.gate is not None and job.gate.summary == "no migrations under migrations/"
    assert job.gate.checked == ()


def test_migrations_nothing_could_lint_are_skipped_with_the_reason_never_passed(
    tmp_path: Path, registry: Registry
) -> None:
    result = run(
        migrations_tree(tmp_path),
        {"m": {"gate": "migration-safety"}, "after": {"needs": ["m"], "run": "true"}},
        NO_SQUAWK,
    )
    job = result.job("m")
    assert job.result == "skipped"
    assert job.reason is not None and job.reason.endswith(
        "2 not checked: squawk is not installed (pip install squawk-cli (next to Conveyor), "
        "or point CONVEYOR_SQUAWK at squawk)"
    )
    assert job.gate is not None
    assert job.gate.details["why"].startswith("squawk is not installed")
    assert job.gate.checked == (
        "migrations/versions/1a2b_add_email.py",
        "migrations/versions/3c4d_drop_name.py",
    )
    assert result.job("after").result == "skipped"


def test_paths_widen_the_search_to_django_apps_and_sql(tmp_path: Path, registry: Registry) -> None:
    job = run(migrations_tree(tmp_path), {"m": {"gate": "migration-safety", "paths": ["."]}})
    gate = job.job("m").gate
    assert gate is not None
    assert gate.checked == (
        "app/migrations/0001_initial.py",
        "db/001_init.sql",
        "migrations/versions/1a2b_add_email.py",
        "migrations/versions/3c4d_drop_name.py",
    )


def test_a_registered_checker_s_verdict_is_the_gate_s_with_file_line_and_detector(
    tmp_path: Path, registry: Registry
) -> None:
    name = registry.checker(drop_column, name="drop-column")
    root = migrations_tree(tmp_path)
    result = run(root, {"m": {"gate": "migration-safety", "paths": ["migrations", "db"]}})
    job = result.job("m")
    assert (result.result, job.result) == ("failure", "failure")
    assert job.reason is not None and job.reason.endswith("; drop-column: 2 destructive statements")
    assert job.gate is not None and job.gate.gate == "migration-safety"
    assert [f for f in job.gate.findings if f.detector == "drop-column"] == [
        Finding("db/001_init.sql", 2, "drop-column"),
        Finding("migrations/versions/3c4d_drop_name.py", 2, "drop-column"),
    ]
    assert job.gate.details["checker"] == f"squawk, {name}"  # beside the built-in review
    assert "migrations/versions/3c4d_drop_name.py:2: drop-column" in job.log

    def ours(job: JobResult) -> list[str]:
        assert job.gate is not None
        return [f.file for f in job.gate.findings if f.detector == "drop-column"]

    excused = run(
        root,
        {"m": {"gate": "migration-safety", "paths": ["migrations", "db"], "allow": ["db/*"]}},
    ).job("m")
    assert excused.result == "failure" and excused.gate is not None
    assert ours(excused) == ["migrations/versions/3c4d_drop_name.py"]
    assert excused.gate.allowed >= 1
    all_excused = run(
        root, {"m": {"gate": "migration-safety", "allow": ["migrations/versions/*"]}}
    ).job("m")
    # The checker's failure is excused; the unrendered Alembic files still keep it from passing.
    assert all_excused.result == "skipped" and all_excused.gate is not None
    assert ours(all_excused) == [] and all_excused.gate.allowed >= 1

    (root / "migrations/versions/3c4d_drop_name.py").write_text("op.add_column('users', x)\n")
    fixed = run(root, {"m": {"gate": "migration-safety"}}).job("m")
    assert fixed.result == "skipped" and ours(fixed) == []


def test_a_crashing_checker_fails_the_gate(tmp_path: Path, registry: Registry) -> None:
    def broken(request: GateRequest, migrations: tuple[str, ...]) -> GateEvidence:
        raise ValueError("cannot parse SQL")

    registry.checker(broken, name="broken")
    job = run(migrations_tree(tmp_path), {"m": {"gate": "migration-safety"}}).job("m")
    assert job.result == "failure"
    assert job.reason is not None
    assert job.reason.endswith(
        "; broken: migration checker 'broken' crashed: ValueError: cannot parse SQL"
    )


# --- entry points ---------------------------------------------------------------------------

PLUGIN = """
from conveyor.pipeline.gates import Finding, GateEvidence

def always_fails(request):
    return GateEvidence("ignored", "failure", "plugin says no", checked=request.paths)

def drop_column(request, migrations):
    findings = [
        Finding(name, number, "plugin-drop-column")
        for name in migrations
        for number, line in enumerate((request.workdir / name).read_text().splitlines(), 1)
        if "DROP COLUMN" in line
    ]
    return GateEvidence("", "failure" if findings else "success", "plugin checked",
                        findings=tuple(findings))
"""


def test_plugins_are_discovered_from_entry_points_and_imported_only_when_run(
    tmp_path: Path, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    distribution(
        site,
        registry,
        "conveyor_plugin_demo",
        PLUGIN,
        "[conveyor.gates]\nplugin-says-no = conveyor_plugin_demo:always_fails\n\n"
        "[conveyor.migration_checkers]\nplugin-drop = conveyor_plugin_demo:drop_column\n",
    )
    assert "plugin-says-no" not in gate_names()  # not on sys.path yet
    monkeypatch.syspath_prepend(str(site))
    assert "plugin-says-no" not in gate_names()  # discovered once, cached until forgotten
    forget_plugins()
    assert "plugin-says-no" in gate_names()
    assert "conveyor_plugin_demo" not in sys.modules

    root = migrations_tree(tmp_path / "project")
    result = run(
        root, {"p": {"gate": "plugin-says-no", "paths": ["app"]}, "m": {"gate": "migration-safety"}}
    )
    plugin = result.job("p")
    assert (plugin.result, plugin.reason) == ("failure", "plugin says no")
    assert plugin.gate is not None and plugin.gate.gate == "plugin-says-no"
    assert plugin.gate.checked == ("app",)
    checked = result.job("m")
    assert checked.result == "failure" and checked.gate is not None
    assert checked.gate.details["checker"] == "squawk, plugin-drop"
    assert [f for f in checked.gate.findings if f.detector == "plugin-drop-column"] == [
        Finding("migrations/versions/3c4d_drop_name.py", 2, "plugin-drop-column"),
    ]
    assert "conveyor_plugin_demo" in sys.modules


def test_a_broken_plugin_names_its_entry_point_and_fails_only_its_job(
    tmp_path: Path, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    distribution(
        site,
        registry,
        "conveyor_plugin_broken",
        "raise ImportError('needs libfoo')\n",
        "[conveyor.gates]\nbroken-gate = conveyor_plugin_broken:check\n",
    )
    monkeypatch.syspath_prepend(str(site))
    forget_plugins()
    message = (
        "entry point 'broken-gate' (conveyor_plugin_broken:check) in group 'conveyor.gates' "
        "from distribution 'conveyor_plugin_broken' cannot be loaded: ImportError: needs libfoo"
    )
    with pytest.raises(GatePluginError) as raised:
        run_gate("broken-gate", tmp_path)
    assert raised.value.message == message
    result = run(tmp_path, {"b": {"gate": "broken-gate"}, "ok": {"run": "true"}})
    assert result.job("b").result == "failure"
    assert (
        result.job("b").reason == f"{message}; fix or uninstall the distribution that declares it"
    )
    assert result.job("ok").result == "success"


def test_a_broken_migration_checker_fails_migration_safety_naming_it(
    tmp_path: Path, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    distribution(
        site,
        registry,
        "conveyor_checker_typo",
        "checker = 42\n",
        "[conveyor.migration_checkers]\ntypo = conveyor_checker_typo:checker\n",
    )
    monkeypatch.syspath_prepend(str(site))
    forget_plugins()
    job = run(migrations_tree(tmp_path / "project"), {"m": {"gate": "migration-safety"}}).job("m")
    assert job.result == "failure"
    assert job.reason is not None
    assert job.reason.startswith("entry point 'typo' (conveyor_checker_typo:checker)")
    assert "is a int, not a callable" in job.reason
