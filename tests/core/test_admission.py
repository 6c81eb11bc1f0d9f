"""Promotion requirements as a table: the facts of an artifact in, the unmet sentences out."""

from __future__ import annotations

import pytest

from conveyor.core.admission import ArtifactFacts, Requirements, unmet_requirements

DIGEST = "sha256:" + "ab12" * 16
SHORT = "sha256:ab12ab12ab12…"


def facts(
    *,
    branch: str | None = "main",
    dirty: bool | None = False,
    succeeded_in: tuple[str, ...] = (),
    gates: dict[str, str] | None = None,
) -> ArtifactFacts:
    return ArtifactFacts(DIGEST, branch, dirty, frozenset(succeeded_in), gates or {})


PROD = Requirements(
    "production", environments=("staging",), branches=("main",), gates=("unit-tests", "lint")
)
ALL_MET = facts(succeeded_in=("staging",), gates={"unit-tests": "success", "lint": "success"})


@pytest.mark.parametrize(
    ("requirements", "artifact", "expected"),
    [
        pytest.param(Requirements("dev"), facts(branch=None, dirty=None), [], id="none-required"),
        pytest.param(PROD, ALL_MET, [], id="all-met"),
        pytest.param(
            Requirements("production", environments=("staging",)),
            facts(succeeded_in=("dev",)),
            [f"no successful release of {SHORT} in staging"],
            id="not-in-staging",
        ),
        pytest.param(
            Requirements("production", environments=("staging", "qa")),
            facts(succeeded_in=("qa",)),
            [f"no successful release of {SHORT} in staging"],
            id="one-of-two-envs",
        ),
        pytest.param(
            Requirements("production", branches=("main",)),
            facts(branch="feature/x"),
            ["built from branch 'feature/x'; production requires main"],
            id="wrong-branch",
        ),
        pytest.param(
            Requirements("production", branches=("main", "release")),
            facts(branch="release"),
            [],
            id="any-listed-branch",
        ),
        pytest.param(
            Requirements("production", branches=("main",)),
            facts(dirty=True),
            ["built from uncommitted changes; production requires a clean commit on main"],
            id="dirty-tree",
        ),
        pytest.param(
            Requirements("production", branches=("main",)),
            facts(branch=None, dirty=None),
            [f"{SHORT} has no recorded git branch; production requires main"],
            id="no-git",
        ),
        pytest.param(
            Requirements("production", gates=("unit-tests", "lint")),
            facts(gates={"lint": "failed"}),
            ["gate 'unit-tests' has no passing result", "gate 'lint' did not pass (failed)"],
            id="gates",
        ),
        pytest.param(
            PROD,
            facts(branch="feature/x", dirty=True, gates={"unit-tests": "success"}),
            [
                f"no successful release of {SHORT} in staging",
                "built from branch 'feature/x'; production requires main",
                "built from uncommitted changes; production requires a clean commit on main",
                "gate 'lint' has no passing result",
            ],
            id="everything-unmet-listed-together",
        ),
    ],
)
def test_unmet_requirements(
    requirements: Requirements, artifact: ArtifactFacts, expected: list[str]
) -> None:
    assert unmet_requirements(requirements, artifact) == expected
