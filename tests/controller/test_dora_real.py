"""DORA's keys from a real run of the example service, in a real git repository.

Four releases of ``catalog`` to production (blue-green): a good one, one whose instances
never get ready and is rolled back by its rollout, a good one that a person then rolls
back. The keys are
checked against the store's own records and git's own commit times: the change failure rate
is 2/3, rework 1/4, and every commit's lead time is its release's end minus its commit time.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from conveyor.application import Caller
from conveyor.core.dora import DeployKind

from ..artifacts.gitrepo import commit_all, git, init_repo
from .harness import run, stack

pytestmark = pytest.mark.integration


def test_dora_of_a_real_run_with_a_rollback(tmp_path: Path) -> None:
    root = tmp_path / "shop"
    database_url = f"sqlite:///{tmp_path / 'state.db'}"

    async def scenario() -> None:
        since = time.time() - 1
        async with stack(root, database_url, deadline="4s", verification="2s") as s:
            init_repo(root)
            (root / ".gitignore").write_text(".conveyor/\n")

            def commit(version: str) -> str:
                (root / "services" / "catalog" / "VERSION").write_text(version + "\n")
                return commit_all(root, version)

            c1 = commit("v1")
            r1 = await s.wait(await s.deploy("production", await s.build("v1")))
            c2 = commit("v2")
            bad = await s.build("v2")
            r2 = await s.wait(
                await s.deploy("production", bad, overrides={"FAULT_READINESS": "fail"})
            )
            c3 = commit("v3")
            r3 = await s.wait(await s.deploy("production", await s.build("v3")))
            back = await s.app.rollback(Caller("alice"), "catalog", "production", None)
            r4 = await s.wait(back)
            assert [r.phase for r in (r1, r2, r3, r4)] == [
                "succeeded",
                "rolled_back",
                "succeeded",
                "succeeded",
            ]
            await asyncio.sleep(0.05)
            report = s.app.dora(
                Caller("test"), since=since, until=time.time() + 1, env="production", service=None
            )

            keys = report.total
            assert keys.deployments == 4
            assert keys.change_deployments == 3
            assert keys.successful_changes == 2
            assert keys.failed_changes == 2 and keys.change_failure_rate == 2 / 3
            assert keys.rework_deployments == 1 and keys.rework_rate == 1 / 4
            assert [(f.release_id, f.why) for f in keys.failures] == [
                (r2.id, "rollout rolled back"),
                (r3.id, f"rolled back by r{r4.revision}"),
            ]

            def at(release_id: int, kind: str) -> float:
                return next(e.at for e in s.store.events(release_id=release_id) if e.kind == kind)

            ended = {r.id: at(r.id, f"release.{r.phase}") for r in (r1, r2, r3, r4)}
            recoveries = [
                ended[r2.id] - at(r2.id, "release.aborted"),
                ended[r4.id] - r4.created_at,
            ]
            assert keys.recovery.count == 2
            assert keys.recovery.median == pytest.approx(sum(recoveries) / 2, abs=1e-6)

            def committed(sha: str) -> float:
                return float(git(root, "show", "-s", "--format=%ct", sha))

            # r1 is the first release known: only its head commit counts. r3 is the first
            # to deliver c2 (r2 was rolled back) and c3.
            lead = sorted(
                [
                    ended[r1.id] - committed(c1),
                    ended[r3.id] - committed(c2),
                    ended[r3.id] - committed(c3),
                ]
            )
            assert keys.lead_time.count == 3
            assert keys.lead_time.median == pytest.approx(lead[1], abs=1e-6)
            kinds = {
                d.release_id: d.kind
                for d in s.store.deployments(since=since, until=time.time() + 1)
            }
            assert kinds[r4.id] is DeployKind.ROLLBACK

    run(scenario())
