"""Promotion through the real stack: an environment refuses an artifact that lacks what it requires.

The refusal must name every unmet requirement, leave evidence on the ledger and create no
release; once the requirement is met (the same digest succeeded in staging, or the build
comes from a clean main) the same deploy goes through.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conveyor.application import Caller
from conveyor.errors import Refused

from .harness import run, stack

pytestmark = pytest.mark.integration


def git(root: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid", *args],
        cwd=root,
        check=True,
        capture_output=True,
    )


def test_production_requires_the_same_digest_to_succeed_in_staging(
    tmp_path: Path, database_url: str
) -> None:
    async def scenario() -> None:
        config = {"instances": 1, "verification": "0.5s", "requires": {"production": "[staging]"}}
        async with stack(tmp_path, database_url, **config) as s:
            digest = await s.build("v1")
            with pytest.raises(Refused) as refused:
                await s.deploy("production", digest)
            assert "in staging" in refused.value.message
            assert refused.value.hint is not None and "--env staging" in refused.value.hint
            assert s.store.releases("catalog", "production") == []
            events = s.store.events(service="catalog", env="production")
            assert [e.kind for e in events] == ["release.refused"]
            assert events[0].details["artifact"] == digest
            assert len(events[0].details["unmet"]) == 1

            staged = await s.wait(await s.deploy("staging", digest))
            assert staged.phase == "succeeded", staged.status
            # A different build has not been through staging, even after this one has.
            with pytest.raises(Refused):
                await s.deploy("production", await s.build("v2"))
            promoted = await s.wait(await s.deploy("production", digest))
            assert promoted.phase == "succeeded", promoted.status
            assert promoted.artifact_digest == digest

            # Rollbacks are exempt: tightening the rules must never lock the way back.
            v2 = await s.build("v2")
            assert (await s.wait(await s.deploy("staging", v2))).phase == "succeeded"
            assert (await s.wait(await s.deploy("production", v2))).phase == "succeeded"
            file = tmp_path / "conveyor.yaml"
            strict = "requires: {environments: [staging], branches: [main]}"
            file.write_text(file.read_text().replace("requires: [staging]", strict))
            with pytest.raises(Refused, match="no recorded git branch"):
                await s.deploy("production", digest)  # not a git checkout: no branch
            back = await s.app.rollback(Caller("test"), "catalog", "production", None)
            assert back.artifact_digest == digest and back.rollback_of == promoted.revision
            assert (await s.wait(back)).phase == "succeeded", back.status

    run(scenario())


def test_a_branch_requirement_refuses_a_build_from_another_branch(
    tmp_path: Path, database_url: str
) -> None:
    async def scenario() -> None:
        config = {"instances": 1, "requires": {"staging": "{branches: [main]}"}}
        async with stack(tmp_path, database_url, **config) as s:
            (tmp_path / ".gitignore").write_text("state.db*\n")
            (tmp_path / "services" / "catalog" / "VERSION").write_text("v1\n")
            git(tmp_path, "init", "-q", "-b", "main")
            git(tmp_path, "add", "-A")
            git(tmp_path, "commit", "-q", "-m", "v1")
            git(tmp_path, "checkout", "-q", "-b", "feature/x")
            feature = await s.build("v1")
            with pytest.raises(Refused) as refused:
                await s.deploy("staging", feature)
            assert "built from branch 'feature/x'; staging requires main" in refused.value.message
            assert "uncommitted" not in refused.value.message  # the tree was clean
            assert s.store.releases("catalog", "staging") == []
            kinds = [e.kind for e in s.store.events(service="catalog", env="staging")]
            assert kinds == ["release.refused"]

            git(tmp_path, "checkout", "-q", "main")
            (tmp_path / "services" / "catalog" / "VERSION").write_text("v2\n")
            git(tmp_path, "commit", "-q", "-am", "v2")
            release = await s.wait(await s.deploy("staging", await s.build("v2")))
            assert release.phase == "succeeded", release.status

    run(scenario())
