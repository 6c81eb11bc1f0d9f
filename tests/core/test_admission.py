"""Promotion requirements as a table: the facts of an artifact in, the unmet sentences out."""

from __future__ import annotations

import pytest

from conveyor.core.admission import (
    ArtifactFacts,
    Candidate,
    Current,
    Requirements,
    admit,
    unmet_requirements,
)
from conveyor.core.state import Phase
from conveyor.errors import AlreadyDeployed, Conflict, Refused

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


# --- admit: may this release start? ---------------------------------------------------------


CANDIDATE = Candidate("web", "prod", "t-new", 2, ("web",))
STABLE = Current(1, "t-old", 2, Phase.SUCCEEDED, ready=2)
SAME = Current(1, "t-new", 2, Phase.SUCCEEDED, ready=2)


@pytest.mark.parametrize(
    ("candidate", "active", "stable", "present", "outcome"),
    [
        pytest.param(CANDIDATE, None, None, True, "start", id="first-release"),
        pytest.param(CANDIDATE, None, STABLE, True, "start", id="new-version"),
        pytest.param(
            Candidate("web", "prod", "t-new", 2, ("web", "worker")),
            None,
            STABLE,
            True,
            "start",
            id="shared-artifact",
        ),
        pytest.param(
            Candidate("web", "prod", "t-new", 2, ("worker",)),
            None,
            STABLE,
            True,
            Refused,
            id="built-for-another-service",
        ),
        pytest.param(
            CANDIDATE,
            Current(2, "t-x", 2, Phase.PROGRESSING),
            STABLE,
            True,
            Conflict,
            id="rollout-in-progress",
        ),
        pytest.param(
            CANDIDATE,
            Current(2, "t-x", 2, Phase.ROLLED_BACK),
            STABLE,
            True,
            "start",
            id="after-a-rollback",
        ),
        pytest.param(CANDIDATE, None, STABLE, False, Refused, id="no-way-back"),
        pytest.param(CANDIDATE, None, SAME, True, AlreadyDeployed, id="nothing-to-deploy"),
        pytest.param(
            CANDIDATE,
            None,
            Current(1, "t-new", 2, Phase.SUCCEEDED, ready=1),
            True,
            "restore",
            id="same-but-short",
        ),
        pytest.param(
            CANDIDATE,
            None,
            Current(1, "t-new", 2, Phase.SUCCEEDED, ready=0),
            True,
            "restore",
            id="same-after-down",
        ),
        pytest.param(
            CANDIDATE,
            None,
            Current(1, "t-new", 3, Phase.SUCCEEDED, ready=3),
            True,
            "start",
            id="scaling-is-a-release",
        ),
    ],
)
def test_admit(
    candidate: Candidate,
    active: Current | None,
    stable: Current | None,
    present: bool,
    outcome: object,
) -> None:
    if isinstance(outcome, str):
        assert admit(candidate, active=active, stable=stable, stable_artifact_present=present) == (
            outcome
        )
    else:
        assert isinstance(outcome, type)
        with pytest.raises(outcome):
            admit(candidate, active=active, stable=stable, stable_artifact_present=present)
