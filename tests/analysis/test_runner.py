"""``AnalysisRun``: scheduling by the controller's clock, limits, resumption, bad providers.

The providers here are small implementations of the ``MetricProvider`` protocol written for
the test (scripted values, a hang, a crash): the runner's contract is with the protocol.
Real providers are exercised in their own modules, and once here end to end.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from conveyor.analysis import AnalysisContext, AnalysisRun, default_providers
from conveyor.analysis.base import judged
from conveyor.core.analysis import Measurement, MetricSpec

from .support import Clock, run


class Scripted:
    """Answers with the next value of a script; records when it was asked and begun."""

    kind = "scripted"

    def __init__(self, values: Sequence[Any]) -> None:
        self.values = list(values)
        self.calls: list[tuple[str, Measurement | None]] = []
        self.begun: list[str] = []

    def begin(self, spec: MetricSpec, context: AnalysisContext) -> None:
        self.begun.append(spec.name)

    async def measure(self, spec: MetricSpec, context: AnalysisContext) -> Measurement:
        self.calls.append((spec.name, context.previous))
        value = self.values.pop(0)
        return judged(spec, value, context, context.clock(), evidence={"n": len(self.calls)})


class Hangs:
    kind = "hangs"

    async def measure(self, spec: MetricSpec, context: AnalysisContext) -> Measurement:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")


class Crashes:
    kind = "crashes"

    async def measure(self, spec: MetricSpec, context: AnalysisContext) -> Measurement:
        raise KeyError("bug")


def metric(name: str = "m", **overrides: Any) -> MetricSpec:
    values: dict[str, Any] = {
        "name": name,
        "provider": "scripted",
        "interval": 10.0,
        "count": 3,
        "failure_condition": "result > 0.01",
    }
    values.update(overrides)
    return MetricSpec(**values)


def new_run(
    metrics: Sequence[MetricSpec], provider: Any, clock: Clock, **kwargs: Any
) -> AnalysisRun:
    providers = {provider.kind: provider} if not isinstance(provider, dict) else provider
    context = AnalysisContext("run-1", clock=clock)
    return AnalysisRun(metrics, providers, context, started_at=clock.now, **kwargs)


def test_measures_on_schedule_and_succeeds_at_the_count() -> None:
    clock = Clock()
    provider = Scripted([0.001, 0.002, 0.003])
    analysis = new_run([metric(initial_delay=5.0)], provider, clock)
    start = clock.now

    async def body() -> None:
        assert await analysis.step(clock.now) == []  # initial delay
        assert analysis.next_due(clock.now) == start + 5
        clock.advance(5)
        assert [m.phase for m in await analysis.step(clock.now)] == ["successful"]
        clock.advance(9.9)
        assert await analysis.step(clock.now) == []  # not due yet
        clock.advance(0.1)
        assert len(await analysis.step(clock.now)) == 1
        clock.advance(10)
        assert len(await analysis.step(clock.now)) == 1
        assert analysis.phase == "successful"
        assert analysis.next_due(clock.now) is None
        assert await analysis.step(clock.advance(10)) == []  # done: nothing more is measured

    run(body)
    assert len(provider.calls) == 3
    assert provider.begun == ["m"]
    summary = analysis.summary()
    assert summary.phase == "successful"
    assert summary.message == "all 1 metrics passed"
    assert summary.evidence["m"]["measurements"] == 3


def test_a_failure_ends_the_run_while_other_metrics_still_run() -> None:
    clock = Clock()
    provider = Scripted([0.5, 0.001])  # both metrics are due at once: m then other
    analysis = new_run([metric("m"), metric("other", count=None)], provider, clock)

    async def body() -> None:
        await analysis.step(clock.now)
        assert analysis.phase == "failed"
        assert await analysis.step(clock.advance(10)) == []

    run(body)
    summary = analysis.summary()
    assert summary.message == ("m failed: 1 failed (limit 0): result 0.5 matched 'result > 0.01'")
    assert summary.evidence["other"]["phase"] == "running"


def test_measurement_times_come_from_the_tick_and_previous_is_passed_on() -> None:
    clock = Clock()
    provider = Scripted([0.001, 0.001])
    analysis = new_run([metric()], provider, clock)

    async def body() -> None:
        first = (await analysis.step(clock.now))[0]
        assert first.started_at == first.finished_at == clock.now
        await analysis.step(clock.advance(10))

    run(body)
    assert provider.calls[0][1] is None
    assert provider.calls[1][1] is not None and provider.calls[1][1].evidence == {"n": 1}


def test_resume_from_json_continues_where_the_stored_run_stopped() -> None:
    clock = Clock()
    first_provider = Scripted([0.001])
    analysis = new_run([metric(failure_limit=1)], first_provider, clock)
    run(lambda: analysis.step(clock.now))
    stored = json.loads(json.dumps(analysis.to_json()))  # what the store keeps

    clock.advance(3)  # the controller died and came back 3 s later
    second_provider = Scripted([0.5, 0.001])
    context = AnalysisContext("run-1", clock=clock)
    resumed = AnalysisRun.from_json(stored, {"scripted": second_provider}, context)

    async def body() -> None:
        assert await resumed.step(clock.now) == []  # 7 s of the interval still to wait
        clock.advance(7)
        assert [m.phase for m in await resumed.step(clock.now)] == ["failed"]
        clock.advance(10)
        assert [m.phase for m in await resumed.step(clock.now)] == ["successful"]

    run(body)
    assert resumed.phase == "successful"  # 1 failure is within failure_limit 1
    assert resumed.results["m"].count == 3
    assert second_provider.begun == ["m"]  # a resumed run begins again (providers re-snap)
    assert second_provider.calls[0][1] is not None  # and sees the stored measurement


def test_a_hanging_provider_becomes_an_error_measurement() -> None:
    clock = Clock()
    analysis = new_run([metric(provider="hangs", timeout=0.2)], Hangs(), clock)
    (measurement,) = run(lambda: analysis.step(clock.now))
    assert measurement.phase == "error"
    assert measurement.message == "hangs gave no answer within 0.2s"
    assert analysis.phase == "running"  # errors are retried up to the limit


def test_a_crashing_provider_becomes_an_error_measurement() -> None:
    clock = Clock()
    analysis = new_run([metric(provider="crashes")], Crashes(), clock)
    (measurement,) = run(lambda: analysis.step(clock.now))
    assert measurement.phase == "error"
    assert measurement.message == "crashes provider crashed: KeyError: 'bug'"


def test_consecutive_errors_end_the_run_as_error() -> None:
    clock = Clock()
    analysis = new_run([metric(provider="nowhere", consecutive_error_limit=1)], {}, clock)

    async def body() -> None:
        for _ in range(2):
            await analysis.step(clock.now)
            clock.advance(10)

    run(body)
    assert analysis.phase == "error"
    last = analysis.results["m"].last
    assert last is not None and last.message == "no metric provider 'nowhere' here (known: none)"


def test_terminate_ends_open_ended_metrics_as_passed() -> None:
    clock = Clock()
    analysis = new_run([metric(count=None)], Scripted([0.001]), clock)
    run(lambda: analysis.step(clock.now))
    assert analysis.phase == "running"
    analysis.terminate()
    assert analysis.summary().phase == "successful"
    assert analysis.next_due(clock.now) is None
    assert AnalysisRun.from_json(analysis.to_json(), {}, analysis.context).phase == "successful"


def test_end_to_end_with_the_command_provider(tmp_path: Path) -> None:
    """A real provider through the runner: a script reports 0.02, then 0.001."""
    script = tmp_path / "check.py"
    script.write_text(
        "import pathlib\n"
        "p = pathlib.Path('n')\n"
        "n = int(p.read_text()) if p.exists() else 0\n"
        "p.write_text(str(n + 1))\n"
        "print([0.02, 0.001][n])\n"
    )
    clock = Clock()
    command = {"run": [sys.executable, str(script)]}
    spec = metric(provider="command", config=command, failure_limit=1, count=2)
    context = AnalysisContext("run-2", clock=clock, workdir=tmp_path)
    analysis = AnalysisRun([spec], default_providers(), context, started_at=clock.now)

    async def body() -> None:
        await analysis.step(clock.now)
        await analysis.step(clock.advance(10))

    run(body)
    values = [m.value for m in analysis.results["m"].measurements]
    assert values == [0.02, 0.001]
    assert analysis.phase == "successful"
