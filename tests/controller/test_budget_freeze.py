"""The error-budget policy on the real release path: while an SLO's budget is spent, a
frozen environment refuses deploys and retries of the service and lets rollbacks and fixes
through; an environment that only warns refuses nothing. The budget is stubbed spent here
(how it gets spent is test_slo_real.py's story)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.application import Caller
from conveyor.application.slos import SloState
from conveyor.config.slos import SloConfig
from conveyor.core.slo import Budget
from conveyor.errors import Refused

from .harness import run, stack

pytestmark = pytest.mark.integration


def _spent(service: str, env: str) -> SloState:
    slo = SloConfig.model_validate({"name": "availability", "objective": "99.9%"})
    return SloState(service, env, slo, Budget(0.999, 28 * 86400.0, 0.004, 1e5, 3600.0), {}, {})


def test_a_frozen_service_ships_only_rollbacks_and_fixes(tmp_path: Path) -> None:
    async def scenario() -> None:
        fields = {"dev": "when_budget_exhausted: freeze"}
        async with stack(tmp_path, f"sqlite:///{tmp_path / 'state.db'}", env_fields=fields) as s:
            r1 = await s.wait(await s.deploy("dev", await s.build("v1")))
            r2 = await s.wait(await s.deploy("dev", await s.build("v2")))
            s.app.slos.exhausted = _spent  # type: ignore[method-assign]
            v3 = await s.build("v3")
            with pytest.raises(Refused, match="error budget of SLO availability is spent") as info:
                await s.deploy("dev", v3)
            assert "--fix" in (info.value.hint or "")
            [refused] = s.store.events(kinds=["release.refused"])
            assert refused.details["reason"] == "error budget exhausted"
            assert refused.details["budget_remaining"] == pytest.approx(-3.0)
            back = await s.wait(await s.app.rollback(Caller("alice"), "catalog", "dev", None))
            assert back.phase == "succeeded" and back.rollback_of == r1.revision
            fix = await s.app.deploy(Caller("alice"), "catalog", "dev", v3, fix="the 500s of r2")
            assert fix.reason == "fix: the 500s of r2"
            assert (await s.wait(fix)).phase == "succeeded"
            # staging only warns: the same spent budget refuses nothing there
            assert (await s.wait(await s.deploy("staging", v3))).phase == "succeeded"
            assert r2.phase == "succeeded"

    run(scenario())
