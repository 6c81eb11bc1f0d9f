"""Deploy windows through the real stack: refused outside, never in the way back.

The stack runs on real time moved to chosen instants (``Clock``): instances, the router and
the controller see seconds pass as usual, while the windows are judged on the calendar the
test picks — a Saturday, the year-end freeze, the weekend before a daylight-saving change —
without sleeping until then.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from conveyor.application import Caller
from conveyor.application.caller import Role
from conveyor.config.loader import load_project
from conveyor.core.state import Phase
from conveyor.errors import Refused
from conveyor.server.stack import build_stack

from ..controller.harness import Stack, run, write_project

pytestmark = pytest.mark.integration

WINDOWS = """\
windows:
  - name: office-hours
    kind: allow
    schedule: "0 9 * * 1-5"
    duration: 8h
    timezone: Europe/Berlin
    environments: [staging]
    reason: someone is around to watch
  - name: year-end
    kind: deny
    from: 2026-12-23T00:00
    to: 2027-01-02T00:00
    timezone: Europe/Berlin
    reason: year-end freeze
"""
BERLIN = dt.timezone(dt.timedelta(hours=1))  # CET: every instant below is in winter time


def berlin(text: str) -> float:
    """An instant written as Berlin winter time (CET, +01:00)."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=BERLIN).timestamp()


class Clock:
    """Real time, moved to a chosen instant: the stack keeps running, the calendar is ours."""

    def __init__(self, start: float) -> None:
        self.offset = 0.0
        self.move(start)

    def move(self, to: float) -> None:
        self.offset = to - time.time()

    def __call__(self) -> float:
        return time.time() + self.offset


@asynccontextmanager
async def windowed(root: Path, database_url: str, clock: Clock) -> AsyncIterator[Stack]:
    config = write_project(root, instances=1, verification="1s")
    config.write_text(config.read_text() + WINDOWS)
    parts = build_stack(config, database_url=database_url, tick=0.1, clock=clock)
    await parts.start()
    try:
        yield Stack(root, load_project(config), parts)
    finally:
        await parts.close(stop_instances=True)


def refusals(s: Stack) -> list[dict[str, object]]:
    return [dict(e.details) for e in s.store.events() if e.kind == "release.refused"]


def test_a_deploy_outside_its_window_is_refused_and_a_rollback_is_not(
    tmp_path: Path, database_url: str
) -> None:
    async def scenario() -> None:
        clock = Clock(berlin("2026-11-30T10:00"))  # a Monday morning: open
        async with windowed(tmp_path, database_url, clock) as s:
            r1 = await s.wait(await s.deploy("staging", await s.build("v1")))
            r2 = await s.wait(await s.deploy("staging", await s.build("v2")))
            assert (r1.phase, r2.phase) == ("succeeded", "succeeded")
            v3 = await s.build("v3")

            clock.move(berlin("2026-12-05T12:00"))  # Saturday
            with pytest.raises(Refused) as refused:
                await s.deploy("staging", v3)
            assert refused.value.message == (
                "catalog may not be deployed to staging now: it is outside every allow window "
                "for it (next: 'office-hours', 0 9 * * 1-5 for 8h, Europe/Berlin): someone is "
                "around to watch"
            )
            assert refused.value.hint is not None
            assert refused.value.hint.startswith(
                "deploys open again Mon 2026-12-07 09:00 CET (Europe/Berlin), 08:00 UTC;"
            )
            [event] = refusals(s)
            assert event["window"] == "office-hours"
            assert (event["why"], event["asked"], event["artifact"]) == (
                "outside-allow",
                "deploy",
                v3,
            )
            assert event["opens_at"] == berlin("2026-12-07T09:00")

            # The way back is never held back by a window.
            back = await s.wait(await s.app.rollback(Caller("bob"), "catalog", "staging", None))
            assert back.phase == "succeeded" and back.rollback_of == r1.revision

            # Other environments are not held back by a staging-only window.
            rows, _ = s.app.windows(Caller("vera", Role.VIEWER), None, None)
            by_env = {row.env: row.verdict for row in rows}
            assert not by_env["staging"].open and by_env["dev"].open

            clock.move(berlin("2026-12-24T10:00"))  # inside the year-end freeze
            with pytest.raises(Refused, match=r"deny window 'year-end'.*year-end freeze"):
                await s.deploy("dev", v3)
            with pytest.raises(Refused) as frozen:
                await s.deploy("staging", v3)
            # The freeze ends on a Saturday: staging opens with the office on Monday.
            assert "deploys open again Mon 2027-01-04 09:00 CET" in str(frozen.value.hint)
            dev, staging = refusals(s)[1:]
            assert (dev["window"], staging["window"]) == ("year-end", "year-end")
            assert dev["opens_at_text"] == (
                "Sat 2027-01-02 00:00 CET (Europe/Berlin), Fri 2027-01-01 23:00 UTC"
            )
            again = await s.wait(await s.app.rollback(Caller("bob"), "catalog", "staging", None))
            assert again.phase == "succeeded" and again.rollback_of == r2.revision

            # The weekend before clocks go forward: Monday 09:00 is CEST, 07:00 UTC.
            clock.move(berlin("2027-03-27T12:00"))
            with pytest.raises(Refused) as spring:
                await s.deploy("staging", v3)
            assert "Mon 2027-03-29 09:00 CEST (Europe/Berlin), 07:00 UTC" in str(spring.value.hint)
            assert [e.kind for e in s.store.events()].count("release.created") == 4

    run(scenario())


def test_a_rollout_under_way_when_its_window_closes_finishes(
    tmp_path: Path, database_url: str
) -> None:
    async def scenario() -> None:
        clock = Clock(berlin("2026-11-30T10:00"))
        async with windowed(tmp_path, database_url, clock) as s:
            await s.wait(await s.deploy("staging", await s.build("v1")))
            v2, v3 = await s.build("v2"), await s.build("v3")
            clock.move(berlin("2026-11-30T16:59:59"))  # a second before the office closes
            r2 = await s.deploy("staging", v2)
            clock.move(berlin("2026-11-30T17:30"))  # closed while r2 rolls out
            assert s.store.get_release(r2.id).phase.in_progress
            assert (await s.wait(r2)).phase == "succeeded"
            with pytest.raises(Refused, match="outside every allow window"):
                await s.deploy("staging", v3)

    run(scenario())


def test_a_retried_deploy_is_held_back_like_a_deploy(tmp_path: Path, database_url: str) -> None:
    async def scenario() -> None:
        clock = Clock(berlin("2026-11-30T10:00"))
        async with windowed(tmp_path, database_url, clock) as s:
            await s.wait(await s.deploy("staging", await s.build("v1")))
            r2 = await s.deploy("staging", await s.build("v2"))
            await s.app.rollback(Caller("bob"), "catalog", "staging", None)  # aborts r2
            assert (await s.wait(r2)).phase == Phase.ROLLED_BACK

            clock.move(berlin("2026-12-05T12:00"))
            with pytest.raises(Refused, match="outside every allow window"):
                await s.app.control(Caller("bob"), "catalog", "staging", "retry")
            assert refusals(s)[-1]["asked"] == f"retry of r{r2.revision}"

            clock.move(berlin("2026-12-07T09:00"))
            retried = await s.app.control(Caller("bob"), "catalog", "staging", "retry")
            assert (await s.wait(retried)).phase == "succeeded"

    run(scenario())


def test_the_emergency_path_overrides_a_window_on_the_record(
    tmp_path: Path, database_url: str
) -> None:
    async def scenario() -> None:
        clock = Clock(berlin("2026-11-30T10:00"))
        async with windowed(tmp_path, database_url, clock) as s:
            await s.wait(await s.deploy("staging", await s.build("v1")))
            v2 = await s.build("v2")
            clock.move(berlin("2026-12-24T10:00"))
            admin = Caller("erin")  # without an applied access: policy, admins break glass
            release = await s.app.deploy(admin, "catalog", "staging", v2, emergency="site down")
            assert (await s.wait(release)).phase == "succeeded"
            [override] = [
                e.details
                for e in s.store.events(release_id=release.id)
                if e.kind == "emergency.override"
            ]
            assert override["reason"] == "site down"
            assert override["window"]["window"] == "year-end"
            assert override["window"]["why"] == "deny"
            assert refusals(s) == []  # nothing was refused: it was overridden, and says so

    run(scenario())
