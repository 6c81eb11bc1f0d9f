"""The builtin provider against a real ``BuiltinRouter`` proxying to two tiny backends.

Traffic is real (HTTP through the router's socket); only time is the controller's: the test
advances a fake clock between bursts of requests, as the controller's ticks would.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from conveyor.analysis import AnalysisContext, AnalysisRun, RouteView
from conveyor.analysis.providers import BuiltinProvider
from conveyor.core.analysis import Measurement, MetricSpec
from conveyor.core.model import Backend, Pool, RouteTable
from conveyor.traffic.builtin import BuiltinRouter

from .support import Backend as Instance
from .support import Clock, run, send

pytestmark = pytest.mark.integration

SERVICE, ENV = "shop", "prod"


class Stage:
    """A router serving ``shop/prod`` with a stable v1 and a canary v2 at given weights."""

    def __init__(self, stable: Instance, canary: Instance) -> None:
        self.stable, self.canary = stable, canary
        self.router = BuiltinRouter()
        self.port = 0

    async def start(self, canary_weight: int) -> Stage:
        await self.stable.start()
        await self.canary.start()
        await self.router.serve(SERVICE, ENV, "127.0.0.1", 0, None)
        self.port = self.router.bound_port(SERVICE, ENV)
        self.weigh(canary_weight)
        return self

    def weigh(self, canary_weight: int) -> None:
        pools = (
            Pool("v1", 100 - canary_weight, (Backend("i1", "127.0.0.1", self.stable.port),)),
            Pool("v2", canary_weight, (Backend("i2", "127.0.0.1", self.canary.port),)),
        )
        self.router.apply(SERVICE, ENV, RouteTable(pools))

    async def close(self) -> None:
        await self.router.close()
        await self.stable.stop()
        await self.canary.stop()

    async def __aenter__(self) -> Stage:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def context(stage: Stage, clock: Clock, stable: str | None = "v1") -> AnalysisContext:
    view = RouteView(stage.router, SERVICE, ENV)
    return AnalysisContext(
        "run-1", canary_version="v2", stable_version=stable, router=view, clock=clock
    )


def metric(name: str, query: str, **overrides: Any) -> MetricSpec:
    values: dict[str, Any] = {"name": name, "provider": "builtin", "config": {"query": query}}
    values |= {"interval": 5.0, "count": 3, "initial_delay": 5.0}
    values.update(overrides)
    return MetricSpec(**values)


def analysis(
    metrics: Sequence[MetricSpec],
    ctx: AnalysisContext,
    clock: Clock,
    provider: BuiltinProvider | None = None,
) -> AnalysisRun:
    providers = {"builtin": provider or BuiltinProvider()}
    return AnalysisRun(metrics, providers, ctx, started_at=clock.now)


def by_name(measurements: list[Measurement], run_: AnalysisRun) -> dict[str, Measurement]:
    names = [m.name for m in run_.metrics if run_.results[m.name].last in measurements]
    return {name: run_.results[name].last for name in names}  # type: ignore[misc]


def test_windows_measure_the_canary_since_the_previous_measurement() -> None:
    clock = Clock()
    stage = Stage(Instance("v1"), Instance("v2", error_every=4, delay=0.002))
    metrics = [
        metric("errors", "error_rate", failure_condition="result > 0.2", failure_limit=1),
        metric("p95", "latency_p95", failure_condition="result > 1.0"),
        metric("rate", "request_rate", success_condition="result > 0"),
    ]

    async def body() -> None:
        async with stage:
            await stage.start(canary_weight=100)
            run_ = analysis(metrics, context(stage, clock), clock)
            await run_.step(clock.now)  # the run begins: snapshots taken, nothing due yet
            await send(stage.port, 40)
            first = by_name(await run_.step(clock.advance(5)), run_)
            await send(stage.port, 20)
            second = by_name(await run_.step(clock.advance(5)), run_)

        assert first["errors"].value == 10 / 40  # every 4th of 40 requests failed
        assert first["errors"].phase == "failed"
        assert first["errors"].evidence["requests"] == 40
        assert first["errors"].evidence["window_seconds"] == 5.0
        assert second["errors"].evidence["requests"] == 20  # only what came since
        assert second["errors"].value == 5 / 20
        assert run_.phase == "failed"  # the second failure exceeds failure_limit 1
        assert 0.002 <= first["p95"].value < 1.0
        assert first["p95"].evidence["samples"] == 40
        assert first["p95"].phase == "successful"
        assert first["rate"].value == 40 / 5

    run(body)


def test_too_little_traffic_is_inconclusive_never_failed() -> None:
    clock = Clock()
    stage = Stage(Instance("v1"), Instance("v2", error_every=1))  # every request fails
    spec = metric("errors", "error_rate", failure_condition="result > 0.01", min_sample=20)

    async def body() -> None:
        async with stage:
            await stage.start(canary_weight=100)
            run_ = analysis([spec], context(stage, clock), clock)
            await run_.step(clock.now)
            await send(stage.port, 3, concurrency=1)
            (measurement,) = await run_.step(clock.advance(5))
        assert measurement.phase == "inconclusive"
        assert measurement.message == "only 3 samples, 20 needed to judge"
        assert measurement.value == 1.0  # the value is kept as evidence all the same

    run(body)


def test_no_traffic_at_all_is_no_data() -> None:
    clock = Clock()
    stage = Stage(Instance("v1"), Instance("v2"))
    spec = metric("errors", "error_rate", failure_condition="result > 0.01")

    async def body() -> None:
        async with stage:
            await stage.start(canary_weight=0)
            run_ = analysis([spec], context(stage, clock), clock)
            await run_.step(clock.now)
            await send(stage.port, 10)
            (measurement,) = await run_.step(clock.advance(5))
        assert (measurement.phase, measurement.message) == ("inconclusive", "no data")

    run(body)


def compare(query: str, **settings: Any) -> MetricSpec:
    config = {"query": query, "compare": settings}
    return metric(query, query, config=config, initial_delay=0.0, count=2, inconclusive_limit=1)


def test_compare_error_rate_fails_a_bad_canary_and_passes_a_good_one() -> None:
    settings = {"max_delta": 0.01, "alpha": 0.05, "beta": 0.05, "min_requests": 50}

    async def judge(canary: Instance) -> Measurement:
        clock = Clock()
        stage = Stage(Instance("v1", error_every=200), canary)
        async with stage:
            await stage.start(canary_weight=50)
            run_ = analysis(
                [compare("compare_error_rate", **settings)], context(stage, clock), clock
            )
            first = await run_.step(clock.now)  # at the start: no traffic yet
            await send(stage.port, 700, concurrency=16)
            (second,) = await run_.step(clock.advance(5))
        assert first[0].phase == "inconclusive"
        assert first[0].message.startswith("only 0 canary requests so far")
        return second

    bad = run(lambda: judge(Instance("v2", error_every=10)))
    assert bad.phase == "failed", bad.message
    assert bad.evidence["canary_requests"] + bad.evidence["stable_requests"] == 700
    assert bad.value >= 0.95  # P(canary worse by more than 1 point)
    good = run(lambda: judge(Instance("v2")))
    assert good.phase == "successful", good.message
    assert good.evidence["canary_errors"] == 0


def test_compare_latency_fails_a_slow_canary() -> None:
    clock = Clock()
    stage = Stage(Instance("v1", delay=0.001), Instance("v2", delay=0.1))
    spec = compare("compare_latency", quantile=0.95, max_ratio=1.5, alpha=0.05, min_samples=30)

    async def body() -> None:
        async with stage:
            await stage.start(canary_weight=50)
            run_ = analysis([spec], context(stage, clock), clock)
            await run_.step(clock.now)
            # Few at a time: with many in flight a busy machine queues the stable's requests
            # behind the canary's in the one test loop, and both look slow.
            await send(stage.port, 160, concurrency=4)
            (measurement,) = await run_.step(clock.advance(5))
        assert measurement.phase == "failed", measurement.message
        assert measurement.value > 1.5  # the p95 ratio
        evidence = measurement.evidence
        assert evidence["canary_samples"] + evidence["stable_samples"] == 160
        assert evidence["p_value"] < 0.05

    run(body)


def test_compare_latency_defaults_tolerate_milliseconds_and_catch_a_slow_canary() -> None:
    """A spec with no settings (or stored before min_delta existed) gets the defaults:
    4x slower by 3 ms is inside the 25 ms tolerance, 100 ms slower is not."""

    async def judge(canary: Instance) -> Measurement:
        clock = Clock()
        stage = Stage(Instance("v1", delay=0.001), canary)
        async with stage:
            await stage.start(canary_weight=50)
            run_ = analysis([compare("compare_latency")], context(stage, clock), clock)
            await run_.step(clock.now)
            await send(stage.port, 120, concurrency=8)
            (measurement,) = await run_.step(clock.advance(5))
        return measurement

    fresh = run(lambda: judge(Instance("v2", delay=0.004)))
    assert fresh.phase != "failed", fresh.message
    assert fresh.evidence["min_delta"] == 0.025 and fresh.evidence["over_threshold"] == 0
    slow = run(lambda: judge(Instance("v2", delay=0.1)))
    assert slow.phase == "failed", slow.message
    assert slow.evidence["look"] >= 1


def test_compare_without_a_stable_version_is_inconclusive() -> None:
    clock = Clock()
    stage = Stage(Instance("v1"), Instance("v2"))

    async def body() -> None:
        async with stage:
            await stage.start(canary_weight=100)
            run_ = analysis(
                [compare("compare_error_rate")], context(stage, clock, stable=None), clock
            )
            (measurement,) = await run_.step(clock.now)
        assert measurement.phase == "inconclusive"
        assert measurement.message == "no stable version to compare against (first release)"

    run(body)


def test_a_restarted_controller_continues_the_window_from_stored_evidence() -> None:
    clock = Clock()
    stage = Stage(Instance("v1"), Instance("v2", error_every=2))
    spec = metric("errors", "error_rate", failure_limit=-1)

    async def body() -> None:
        async with stage:
            await stage.start(canary_weight=100)
            first = analysis([spec], context(stage, clock), clock)
            await first.step(clock.now)
            await send(stage.port, 10)
            await first.step(clock.advance(5))
            stored = first.to_json()
            await send(stage.port, 30)  # traffic while the controller is down
            # A new controller process: new provider (no memory), same router and counters.
            resumed = AnalysisRun.from_json(
                stored, {"builtin": BuiltinProvider()}, context(stage, clock)
            )
            (after,) = await resumed.step(clock.advance(5))
            assert after.evidence["requests"] == 30  # not 40 (lifetime), not 0 (since resume)

            # The router restarts too (its counters start again from zero):
            await stage.router.close()
            stage.router = BuiltinRouter()
            await stage.router.serve(SERVICE, ENV, "127.0.0.1", 0, None)
            stage.port = stage.router.bound_port(SERVICE, ENV)
            stage.weigh(100)
            stored = resumed.to_json()
            providers = {"builtin": BuiltinProvider()}
            again = AnalysisRun.from_json(stored, providers, context(stage, clock))
            await send(stage.port, 8)
            (last,) = await again.step(clock.advance(5))
            assert last.evidence["requests"] == 8  # everything the new router has seen
            assert last.value == 0.5

    run(body)
