"""``run_as`` through the real stack: checked at deploy, frozen into the release, kept by a
rollback.

A user this host lacks is refused when the release is created, naming the line of
conveyor.yaml that set it (the file itself validates anywhere). A release with ``run_as``
runs its instances as that user; a rollback to a release made before ``run_as`` runs the
old version as it ran then (root), and the template key tells the two apart.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from conveyor.application import Caller
from conveyor.errors import ConfigError
from tests.run_as_support import RUN_AS, needs_run_as, reachable, the_user

from ..controller.harness import stack
from ..runtime.test_run_as import ids

pytestmark = pytest.mark.integration
__all__ = ["reachable"]  # the fixture, imported to be used

CATALOG = "  catalog:\n    path: services/catalog\n"


def set_run_as(root: Path, run_as: str | None) -> None:
    """Give the catalog service a ``run_as`` line (or take it away) in conveyor.yaml."""
    config = root / "conveyor.yaml"
    lines = [line for line in config.read_text().splitlines(keepends=True) if "run_as" not in line]
    text = "".join(lines)
    if run_as is not None:
        text = text.replace(CATALOG, f"{CATALOG}    run_as: {run_as}\n", 1)
    config.write_text(text)


def test_a_user_this_host_lacks_is_refused_at_deploy_naming_the_line(
    tmp_path: Path, database_url: str
) -> None:
    async def scenario() -> None:
        async with stack(tmp_path, database_url, instances=1) as s:
            artifact = await s.build("v1")
            set_run_as(tmp_path, "no-such-user-xyz")
            with pytest.raises(ConfigError) as refused:
                await s.deploy("dev", artifact)
            (problem,) = refused.value.problems
            assert problem.field == "services.catalog.run_as"
            text = (tmp_path / "conveyor.yaml").read_text().splitlines()
            assert problem.line is not None and "no-such-user-xyz" in text[problem.line - 1]
            assert "there is no user 'no-such-user-xyz' on this host" in problem.message
            assert "useradd --system" in (problem.hint or "")
            assert s.store.releases("catalog", "dev", limit=5) == []

    asyncio.run(scenario())


@needs_run_as
def test_instances_run_as_the_release_user_and_a_rollback_as_theirs(
    reachable: Path, database_url: str
) -> None:
    user = the_user()
    root = reachable

    def users(s: object, env: str) -> set[tuple[int, int]]:
        return {ids(i.pid)[:2] for i in s.instances(env) if i.pid}  # type: ignore[attr-defined]

    async def scenario() -> None:
        async with stack(root, database_url, instances=1) as s:
            artifact = await s.build("v1")
            r1 = await s.wait(await s.deploy("dev", artifact))
            assert r1.phase.value == "succeeded"
            assert users(s, "dev") == {(0, 0)}  # no run_as: as the server (root)

            set_run_as(root, RUN_AS)
            r2 = await s.deploy("dev", artifact)  # same bytes and config, another user
            assert r2.template != r1.template
            assert r2.plan.instance.run_as == RUN_AS
            created = [e for e in s.store.events(release_id=r2.id) if e.kind == "release.created"]
            assert created[0].details["run_as"] == RUN_AS
            assert (await s.wait(r2)).phase.value == "succeeded"
            assert users(s, "dev") == {(user.uid, user.gid)}

            set_run_as(root, None)  # today's file no longer says; r1's plan still does
            back = await s.wait(await s.app.rollback(Caller("test"), "catalog", "dev", 1))
            assert back.phase.value == "succeeded"
            assert back.plan.instance.run_as is None
            assert users(s, "dev") == {(0, 0)}

    asyncio.run(scenario())
