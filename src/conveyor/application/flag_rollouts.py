"""Guarded flag rollouts: start one, take the outcome counts relays forward, tick them.

The decision is ``core.flags.guarded.decide``; this module feeds it and applies it. Each
move (a step, the abort that turns the flag off, completion) is one store transaction:
the rollout's new status, the flag's new live definition and the ledger event with the
judge's evidence, so the flag and its rollout never disagree. The server ticks every
``TICK`` seconds (``run``); counts received between ticks wait in memory and are folded
into the stored status at the next tick, so a restarted server keeps what was judged and
loses at most one tick's reports.

A person changing the flag meanwhile wins: a flag turned off (or its rollout removed) in
that environment stops the guarded rollout (``stopped``), with an event saying so.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from conveyor.application.access import Permission, authorize
from conveyor.application.caller import SYSTEM, Caller
from conveyor.application.flags import Flags, _reason
from conveyor.application.policy import Policy
from conveyor.application.project import ProjectSource
from conveyor.config.analysis import ERROR_RATE_DEFAULTS
from conveyor.core.flags.guarded import GuardSpec, GuardStatus, check_steps, decide
from conveyor.core.flags.model import flag_from_json, flag_to_json, state_to_json
from conveyor.errors import Conflict, NotFound, UsageError
from conveyor.store.flags_repo import NOT_LIVE
from conveyor.store.records import FlagRolloutRecord, NewEvent
from conveyor.store.repository import Store

log = logging.getLogger("conveyor.flags")

TICK = 1.0
MAX_PENDING = 10_000


class FlagRollouts:
    def __init__(
        self,
        flags: Flags,
        project: ProjectSource,
        store: Store,
        policy: Callable[[], Policy],
        clock: Callable[[], float],
    ) -> None:
        self.flags = flags
        self.project = project
        self.store = store
        self.policy = policy
        self.clock = clock
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, str, str], list[int]] = {}

    def start(
        self,
        caller: Caller,
        key: str,
        env: str,
        steps: Sequence[int],
        analysis: str,
        step_seconds: float,
        variant: str | None,
        reason: str,
    ) -> dict[str, Any]:
        authorize(caller, Permission.DEPLOY, env, self.policy())
        reason = _reason(reason)
        problem = check_steps(steps)
        if problem is not None:
            raise UsageError(f"--steps: {problem}", hint="e.g. --steps 1%,10%,50%,100%")
        if not 1 <= step_seconds <= 7 * 86400:
            raise UsageError("the step interval is between 1 s and 7 days")
        current = self.flags.current()
        flag = current.flags.get(key)
        if flag is None:
            raise NotFound(f"unknown flag {key!r}")
        if current.environments and env not in current.environments:
            raise NotFound(f"unknown environment {env!r}")
        treatment = variant or (flag.default if flag.default != flag.off else None)
        if treatment is None or treatment not in flag.variants or treatment == flag.off:
            raise UsageError(
                f"name the variant to roll out (--variant): one of the flag's variants other "
                f"than its off variant {flag.off!r}",
                hint="variants: " + ", ".join(flag.variants),
            )
        spec = GuardSpec(tuple(steps), step_seconds, treatment, flag.off, **self._judge(analysis))
        status = GuardStatus(0, self.clock())
        details = {
            "flag": key,
            "reason": reason,
            "analysis": analysis,
            "spec": spec.to_json(),
        }
        record = self.store.create_flag_rollout(
            key,
            env,
            {**spec.to_json(), "analysis": analysis, "reason": reason},
            status.to_json(spec),
            NewEvent("flag.rollout.started", details),
            actor=caller.actor,
        )
        with self._lock:
            for pending in [k for k in self._pending if k[:2] == (env, key)]:
                del self._pending[pending]
        moved = self._move(
            record,
            status,
            "running",
            spec.steps[0],
            "flag.rollout.step",
            caller.actor,
            {"flag": key, "step": 1, "percentage": spec.steps[0], "reason": reason},
        )
        return rollout_json(moved)

    def outcomes(self, caller: Caller, rows: object) -> int:
        """Counts forwarded by relays; kept only for flags under a running guarded rollout."""
        authorize(caller, Permission.PUBLISH, None, self.policy())
        if not isinstance(rows, list) or len(rows) > 10_000:
            raise UsageError("'counts' is a list of at most 10000 rows")
        running = {(r.env, r.flag) for r in self.store.flag_rollouts(running=True)}
        taken = 0
        with self._lock:
            for row in rows:
                if not isinstance(row, dict):
                    raise UsageError("each count is an object")
                env, flag, variant = row.get("env"), row.get("flag"), row.get("variant")
                numbers = [row.get("requests", 0), row.get("errors", 0)]
                if not all(isinstance(x, str) and 0 < len(x) <= 200 for x in (env, flag, variant)):
                    raise UsageError("each count names env, flag and variant")
                if (
                    not all(
                        isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= 10**9
                        for n in numbers
                    )
                    or numbers[1] > numbers[0]
                ):
                    raise UsageError("requests and errors are counts (errors <= requests)")
                assert isinstance(env, str) and isinstance(flag, str) and isinstance(variant, str)
                if (env, flag) not in running:
                    continue
                key = (env, flag, variant)
                if key not in self._pending and len(self._pending) >= MAX_PENDING:
                    continue
                held = self._pending.setdefault(key, [0, 0])
                held[0] += numbers[0]
                held[1] += numbers[1]
                taken += 1
        return taken

    def progress(self, caller: Caller, key: str | None = None) -> list[dict[str, Any]]:
        """Guarded rollouts, newest first, with their step, counts and last verdict."""
        authorize(caller, Permission.READ, None, self.policy())
        return [rollout_json(r) for r in self.store.flag_rollouts(flag=key, limit=50)]

    def running_versions(self, key: str) -> tuple[tuple[int, int], ...]:
        """(id, version) of the flag's running guarded rollouts: changes whenever one moves,
        counts included (the dashboard's flag page re-renders then, not on a timer)."""
        return tuple((r.id, r.version) for r in self.store.flag_rollouts(flag=key, running=True))

    def guarded_keys(self, env: str) -> list[str]:
        return sorted({r.flag for r in self.store.flag_rollouts(running=True) if r.env == env})

    async def run(self, every: float = TICK) -> None:
        while True:
            await asyncio.sleep(every)
            try:
                await asyncio.to_thread(self.tick)
            except Exception:  # one bad tick must not end guarding
                log.exception("guarded flag rollouts: tick failed")

    def tick(self) -> list[str]:
        """One look at every running rollout; returns the actions taken (for tests)."""
        actions = []
        with self._lock:
            pending, self._pending = self._pending, {}
        for record in self.store.flag_rollouts(running=True):
            new = {
                variant: (n[0], n[1])
                for (env, flag, variant), n in pending.items()
                if (env, flag) == (record.env, record.flag)
            }
            try:
                actions.append(self._tick_one(record, new))
            except Conflict as exc:
                log.info("guarded rollout #%s: %s (next tick)", record.id, exc)
        return actions

    # --- internals ----------------------------------------------------------------------

    def _tick_one(self, record: FlagRolloutRecord, new: Mapping[str, tuple[int, int]]) -> str:
        spec = GuardSpec.from_json(record.spec)
        status = GuardStatus.from_json(record.status)
        flag = self.flags.current().flags.get(record.flag)
        state = flag.state(record.env) if flag is not None else None
        if state is None or not state.on or state.rollout is None:
            self._finish(
                record,
                status,
                spec,
                "stopped",
                "flag.rollout.aborted",
                {
                    "flag": record.flag,
                    "reason": "the flag was turned off or its rollout removed by hand",
                },
            )
            return "stopped"
        decision = decide(spec, status, new, self.clock())
        evidence = {
            "flag": record.flag,
            "verdict": decision.verdict.outcome,
            "detail": decision.verdict.detail,
            "evidence": dict(decision.verdict.evidence),
            "counts": {v: list(c) for v, c in decision.status.counts.items()},
        }
        if decision.action == "wait":
            if new:
                self.store.update_flag_rollout(
                    record.id,
                    record.version,
                    "running",
                    {**decision.status.to_json(spec), "message": decision.message},
                    [],
                    actor=SYSTEM,
                )
            return "wait"
        if decision.action == "advance":
            self._move(
                record,
                decision.status,
                "running",
                decision.percentage,
                "flag.rollout.step",
                SYSTEM,
                {
                    **evidence,
                    "step": decision.status.step + 1,
                    "percentage": decision.percentage,
                    "reason": decision.message,
                },
                message=decision.message,
            )
            return "advance"
        if decision.action == "complete":
            self._finish(
                record,
                decision.status,
                spec,
                "completed",
                "flag.rollout.completed",
                {**evidence, "reason": decision.message},
            )
            return "complete"
        self._move(
            record,
            decision.status,
            "aborted",
            None,
            "flag.rollout.aborted",
            SYSTEM,
            {**evidence, "reason": decision.message},
            message=decision.message,
        )
        return "abort"

    def _move(
        self,
        record: FlagRolloutRecord,
        status: GuardStatus,
        phase: str,
        percentage: int | None,
        kind: str,
        actor: str,
        details: dict[str, Any],
        *,
        message: str = "",
    ) -> FlagRolloutRecord:
        """Set the flag's rollout to ``percentage`` (None: turn it off) with the rollout."""
        spec = GuardSpec.from_json(record.spec)
        current = self.flags.current()
        flag = current.flags[record.flag]
        definition = flag_to_json(flag)
        state = state_to_json(flag.state(record.env))
        if percentage is None:
            state["on"] = False
        else:
            rollout = {
                **(state.get("rollout") or {}),
                "percentage": percentage,
                "variant": spec.treatment,
            }
            state = {**state, "on": True, "rollout": rollout}
        definition["environments"][record.env] = state
        flag_from_json(record.flag, definition, list(current.segments))  # still valid
        live = current.live.get(record.flag)
        expected = live.revision if live is not None else NOT_LIVE
        moved = self.store.update_flag_rollout(
            record.id,
            record.version,
            phase,
            {**status.to_json(spec), "message": message},
            [NewEvent(kind, json.loads(json.dumps(details, default=str)), env=record.env)],
            actor=actor,
            flag_change=(record.flag, definition, expected),
        )
        self.flags._bump()
        return moved

    def _finish(
        self,
        record: FlagRolloutRecord,
        status: GuardStatus,
        spec: GuardSpec,
        phase: str,
        kind: str,
        details: dict[str, Any],
    ) -> None:
        self.store.update_flag_rollout(
            record.id,
            record.version,
            phase,
            {**status.to_json(spec), "message": str(details.get("reason", ""))},
            [NewEvent(kind, json.loads(json.dumps(details, default=str)), env=record.env)],
            actor=SYSTEM,
        )
        self.flags._bump()

    def _judge(self, analysis: str) -> dict[str, Any]:
        """The judge's parameters: an analysis template's compare_error_rate metric, or the
        canaries' defaults for the built-in ``errors``."""
        params = {k: ERROR_RATE_DEFAULTS[k] for k in ("max_delta", "alpha", "beta", "min_requests")}
        loaded = self.project.last_good()
        template = loaded.config.analysis.get(analysis) if loaded is not None else None
        if template is None:
            if analysis != "errors":
                raise UsageError(
                    f"unknown analysis {analysis!r}",
                    hint="'errors' (variant vs control error rate), or a template under "
                    "analysis: with a compare_error_rate metric",
                )
            return params
        for metric in template.metrics:
            if getattr(metric, "query", None) == "compare_error_rate":
                for name in ("max_delta", "alpha", "beta", "min_requests"):
                    value = getattr(metric, name, None)
                    if value is not None:
                        params[name] = value
                return params
        raise UsageError(
            f"analysis {analysis!r} has no compare_error_rate metric",
            hint="a guarded flag rollout judges the variant's error rate against the control's",
        )


def rollout_json(record: FlagRolloutRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "flag": record.flag,
        "env": record.env,
        "phase": record.phase,
        "spec": dict(record.spec),
        "status": dict(record.status),
        "created_at": record.created_at,
        "created_by": record.created_by,
        "updated_at": record.updated_at,
    }
