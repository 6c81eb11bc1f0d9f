"""Feature flags as the server holds them: the file's baseline, live changes that win, and
the per-environment documents relays sync.

**Two sources, one answer.** conveyor.yaml (``flags:`` or ``flags/*.yaml``) is the
reviewed baseline; a change made through the API stores the flag's whole new definition
in the store, which wins from then on. When a live change makes a flag equal to its file
definition again, the live copy is dropped: "live" always means "differs from the file",
so ``drift`` is exactly the set of live flags, each with its diff, and writing them back
into the file (``conveyor flag drift --write``) ends it.

**Every change is a ledger event** (``flag.changed``, ``flag.killed``, ``flag.reset``) with
the caller's identity, the reason they gave and the diff, written in the same transaction
as the definition. **Who may change what** is the deploy permission of each environment a
change touches (docs/people.md): a deployer of staging flips staging flags; production's
flags need a deployer (or admin) of production, narrowed by an applied ``access:`` policy
like deploys are. The kill switch (``off --all``) touches every environment, so it needs
that permission in each.

**Distribution.** ``document(env)`` is what relays sync: the environment's flags and the
segments they use, with a strong ETag (sha256 of the canonical JSON) so unchanged polls
are answered 304 without a body. ``generation`` grows on every change made in this process,
so push streams wake at once; they also re-check every ``RECHECK`` seconds, which picks up
file edits and changes written by another server sharing the database.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from conveyor.application.access import Permission, authorize
from conveyor.application.caller import SYSTEM, Caller
from conveyor.application.policy import Policy
from conveyor.application.project import ProjectSource
from conveyor.core.flags.diff import diff
from conveyor.core.flags.model import (
    Flag,
    FlagDefinitionError,
    Segment,
    document,
    flag_from_json,
    flag_to_json,
    state_to_json,
)
from conveyor.errors import Conflict, NotFound, UsageError
from conveyor.store.flags_repo import NOT_LIVE
from conveyor.store.records import EventRecord, LiveFlag, NewEvent
from conveyor.store.repository import Store

HISTORY_PAGE = 1000
FLAG_EVENTS = (
    "flag.changed",
    "flag.killed",
    "flag.reset",
    "flag.rollout.started",
    "flag.rollout.step",
    "flag.rollout.completed",
    "flag.rollout.aborted",
)
MAX_REASON = 2000
CACHE_SECONDS = 1.0
RECHECK = 2.0


@dataclass(frozen=True)
class FlagSet:
    """The effective flags (file overlaid by live), the file's own, and the live records."""

    flags: dict[str, Flag]
    segments: dict[str, Segment]
    file: dict[str, Flag]
    live: dict[str, LiveFlag]
    environments: tuple[str, ...]

    @property
    def revision(self) -> int:
        return max((live.revision for live in self.live.values()), default=0)


@dataclass(frozen=True)
class Published:
    env: str
    body: bytes
    etag: str
    revision: int


class Flags:
    def __init__(
        self,
        project: ProjectSource,
        store: Store,
        policy: Callable[[], Policy],
        clock: Callable[[], float],
    ) -> None:
        self.project = project
        self.store = store
        self.policy = policy
        self.clock = clock
        self.generation = 0
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, int, Published]] = {}

    # --- reading ------------------------------------------------------------------------

    def current(self) -> FlagSet:
        """Flags as SDKs should see them now: the last good file, live changes on top.

        A broken conveyor.yaml does not stop flags: the last version that loaded is used,
        as rollbacks do, so a typo never turns flags off in production.
        """
        loaded = self.project.last_good()
        file_flags: dict[str, Flag] = {}
        segments: dict[str, Segment] = {}
        envs: tuple[str, ...] = ()
        if loaded is not None:
            file_flags, segments = loaded.config.flag_set()
            envs = tuple(loaded.config.environments)
        live = self.store.live_flags()
        flags = dict(file_flags)
        adopted: list[str] = []
        for key, record in live.items():
            try:
                parsed = flag_from_json(key, record.definition, list(segments))
            except FlagDefinitionError:
                # A live flag naming a segment since removed from the file: keep serving the
                # file's definition (or nothing) rather than a flag that cannot be evaluated.
                continue
            if key in file_flags and _same(parsed, file_flags[key]):
                adopted.append(key)
            flags[key] = parsed
        if adopted:
            live = self._adopt(live, adopted)
        return FlagSet(flags, segments, file_flags, live, envs)

    def _adopt(self, live: dict[str, LiveFlag], keys: list[str]) -> dict[str, LiveFlag]:
        """The file caught up with live changes (written back and reloaded): the live copy
        is dropped, so a later edit of the file is in force again. On the ledger."""
        events = [
            NewEvent(
                "flag.reset",
                {"flag": key, "reason": "conveyor.yaml now defines the live flag", "diff": []},
            )
            for key in keys
        ]
        try:
            self.store.write_live_flags(
                {key: (None, live[key].revision) for key in keys}, events, actor=SYSTEM
            )
        except Conflict:
            return live  # someone changed it meanwhile: theirs stands
        self._bump()
        return {k: v for k, v in live.items() if k not in keys}

    def list_flags(self, caller: Caller) -> list[dict[str, Any]]:
        self._authorize(caller, Permission.READ)
        current = self.current()
        return [self._summary(current, key) for key in sorted(current.flags)]

    def show(self, caller: Caller, key: str) -> dict[str, Any]:
        self._authorize(caller, Permission.READ)
        current = self.current()
        flag = self._flag(current, key)
        out = self._summary(current, key)
        out["definition"] = flag_to_json(flag)
        out["file_definition"] = flag_to_json(current.file[key]) if key in current.file else None
        out["drift"] = self._drift(current, key)
        live = current.live.get(key)
        out["live"] = (
            None
            if live is None
            else {"revision": live.revision, "updated_at": live.updated_at, "by": live.updated_by}
        )
        out["rollouts"] = self.rollouts_json(key)
        return out

    def history(self, caller: Caller, key: str, limit: int = 200) -> list[EventRecord]:
        """The newest ``limit`` events of this flag, oldest first, read a page at a time
        from the end of the ledger: the cost follows the flag's history, not everyone's."""
        self._authorize(caller, Permission.READ)
        mine: list[EventRecord] = []  # newest first
        before: int | None = None
        while len(mine) < limit:
            page = self.store.events(
                kinds=FLAG_EVENTS, newest=True, before_seq=before, limit=HISTORY_PAGE
            )
            mine += [
                e
                for e in reversed(page)
                if e.details.get("flag") == key or key in e.details.get("flags", ())
            ]
            if len(page) < HISTORY_PAGE:
                break
            before = page[0].seq
        return mine[:limit][::-1]

    def drift(self, caller: Caller) -> list[dict[str, Any]]:
        """Every flag whose live definition differs from the file's, with the diff and the
        definition to write back."""
        self._authorize(caller, Permission.READ)
        current = self.current()
        return [
            {
                "key": key,
                "in_file": key in current.file,
                "changes": self._drift(current, key),
                "definition": flag_to_json(current.flags[key]),
                "revision": current.live[key].revision,
            }
            for key in sorted(current.live)
            if key in current.flags
        ]

    def drift_of(self, current: FlagSet, key: str) -> list[dict[str, Any]]:
        """One flag's drift within a ``current()`` already read (the dashboard's flag page
        reads the set once)."""
        return self._drift(current, key)

    def rollouts_json(self, key: str | None = None) -> list[dict[str, Any]]:
        return [
            {
                "id": r.id,
                "flag": r.flag,
                "env": r.env,
                "phase": r.phase,
                "spec": dict(r.spec),
                "status": dict(r.status),
                "created_at": r.created_at,
                "created_by": r.created_by,
                "updated_at": r.updated_at,
            }
            for r in self.store.flag_rollouts(flag=key, limit=20)
        ]

    def published(self, caller: Caller, env: str) -> Published:
        """The environment's document as relays sync it, cached for ``CACHE_SECONDS``."""
        self._authorize(caller, Permission.READ)
        now = self.clock()
        with self._lock:
            cached = self._cache.get(env)
            if (
                cached is not None
                and cached[1] == self.generation
                and now - cached[0] < CACHE_SECONDS
            ):
                return cached[2]
            generation = self.generation
        current = self.current()
        if current.environments and env not in current.environments:
            raise NotFound(
                f"unknown environment {env!r}", hint="one of: " + ", ".join(current.environments)
            )
        guarded = {r.flag for r in self.store.flag_rollouts(running=True) if r.env == env}
        doc = document(env, current.flags, current.segments, current.revision, sorted(guarded))
        body = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        published = Published(env, body, etag, current.revision)
        with self._lock:
            self._cache[env] = (now, generation, published)
        return published

    # --- changing -----------------------------------------------------------------------

    def set_state(
        self, caller: Caller, key: str, env: str, on: bool, reason: str
    ) -> dict[str, Any]:
        def change(state: dict[str, Any]) -> dict[str, Any]:
            return {**state, "on": on}

        return self._change(caller, key, [env], change, "on" if on else "off", reason)

    def set_rollout(
        self,
        caller: Caller,
        key: str,
        env: str,
        percentage: int,
        variant: str | None,
        stickiness: str | None,
        reason: str,
    ) -> dict[str, Any]:
        if (
            isinstance(percentage, bool)
            or not isinstance(percentage, int)
            or not 0 <= percentage <= 100
        ):
            raise UsageError(f"{percentage!r} is not a percentage from 0 to 100", hint="e.g. 25")

        def change(state: dict[str, Any]) -> dict[str, Any]:
            before = state.get("rollout") or {}
            rollout = {**before, "percentage": percentage}
            rollout["variant"] = variant or before.get("variant") or self._treatment(key)
            if stickiness:
                rollout["stickiness"] = stickiness
            return {**state, "on": True, "rollout": rollout}

        return self._change(caller, key, [env], change, f"rollout {percentage}%", reason)

    def set_rules(
        self, caller: Caller, key: str, env: str, rules: object, reason: str
    ) -> dict[str, Any]:
        if not isinstance(rules, list):
            raise UsageError("'rules' is a list of rules", hint='[{"when": [...], "serve": "on"}]')

        def change(state: dict[str, Any]) -> dict[str, Any]:
            return {**state, "rules": rules}

        return self._change(caller, key, [env], change, "rules", reason)

    def kill(self, caller: Caller, key: str, reason: str) -> dict[str, Any]:
        """The kill switch: off in every environment, in one change."""
        current = self.current()
        flag = self._flag(current, key)
        envs = sorted(set(current.environments) | set(flag.environments))

        def change(state: dict[str, Any]) -> dict[str, Any]:
            return {**state, "on": False}

        return self._change(caller, key, envs, change, "kill", reason, kind="flag.killed")

    def reset(self, caller: Caller, key: str, reason: str) -> dict[str, Any]:
        """Drop the live definition: the file's is in force again."""
        current = self.current()
        if key not in current.live:
            raise UsageError(f"flag {key!r} has no live changes", hint="nothing to reset")
        if key not in current.file:
            raise UsageError(
                f"flag {key!r} is not in conveyor.yaml; resetting would delete it",
                hint="write it into flags/ first (`conveyor flag drift --write`)",
            )
        before, after = _aligned(current.flags[key], current.file[key])
        envs = sorted(
            {
                c["path"].split(".")[1]
                for c in diff(before, after)
                if c["path"].startswith("environments.")
            }
        )
        for env in envs or [None]:
            self._authorize(caller, Permission.DEPLOY, env)
        reason = _reason(reason)
        event = NewEvent("flag.reset", {"flag": key, "reason": reason, "diff": diff(before, after)})
        revision = self.store.write_live_flags(
            {key: (None, current.live[key].revision)}, [event], actor=caller.actor
        )
        self._bump()
        return {"flag": key, "revision": revision, "changes": event.details["diff"]}

    # --- internals ----------------------------------------------------------------------

    def _change(
        self,
        caller: Caller,
        key: str,
        envs: Sequence[str],
        change: Callable[[dict[str, Any]], dict[str, Any]],
        action: str,
        reason: str,
        *,
        kind: str = "flag.changed",
    ) -> dict[str, Any]:
        reason = _reason(reason)
        current = self.current()
        flag = self._flag(current, key)
        for env in envs:
            if current.environments and env not in current.environments:
                raise NotFound(
                    f"unknown environment {env!r}",
                    hint="one of: " + ", ".join(current.environments),
                )
            self._authorize(caller, Permission.DEPLOY, env)
        before = flag_to_json(flag)
        for env in envs:
            before["environments"][env] = state_to_json(flag.state(env))
        after = json.loads(json.dumps(before))
        for env in envs:
            after["environments"][env] = change(state_to_json(flag.state(env)))
        try:
            parsed = flag_from_json(key, after, list(current.segments))
        except FlagDefinitionError as error:
            raise UsageError(f"flag {key!r}: {error}", hint=error.hint) from None
        after = flag_to_json(parsed)
        changes = diff(before, after)
        live = current.live.get(key)
        expected = live.revision if live is not None else NOT_LIVE
        if not changes:
            return {"flag": key, "changed": False, "revision": live.revision if live else 0}
        stored = None if key in current.file and _same(parsed, current.file[key]) else after
        event = NewEvent(
            kind,
            {"flag": key, "action": action, "reason": reason, "diff": changes},
            env=envs[0] if len(envs) == 1 else None,
        )
        revision = self.store.write_live_flags(
            {key: (stored, expected)}, [event], actor=caller.actor
        )
        self._bump()
        return {"flag": key, "changed": True, "revision": revision, "changes": changes}

    def _treatment(self, key: str) -> str:
        flag = self.current().flags[key]
        return (
            flag.default
            if flag.default != flag.off
            else next((v for v in flag.variants if v != flag.off), flag.default)
        )

    def _bump(self) -> None:
        with self._lock:
            self.generation += 1
            self._cache.clear()

    def _flag(self, current: FlagSet, key: str) -> Flag:
        flag = current.flags.get(key)
        if flag is None:
            known = ", ".join(sorted(current.flags)[:20]) or "none are defined"
            raise NotFound(
                f"unknown flag {key!r}",
                hint=f"known flags: {known}; new flags are written in conveyor.yaml (flags:)",
            )
        return flag

    def _drift(self, current: FlagSet, key: str) -> list[dict[str, Any]]:
        if key not in current.live:
            return []
        live = current.flags[key]
        filed = current.file.get(key)
        if filed is None:
            return diff({}, flag_to_json(live))
        return diff(*_aligned(filed, live))

    def _summary(self, current: FlagSet, key: str) -> dict[str, Any]:
        flag = current.flags[key]
        envs = sorted(set(current.environments) | set(flag.environments))
        return {
            "key": key,
            "kind": flag.kind,
            "description": flag.description,
            "variants": dict(flag.variants),
            "default": flag.default,
            "off": flag.off,
            "source": "live" if key in current.live else "file",
            "drifted": key in current.live and key in current.file,
            "environments": {env: _env_summary(flag, env) for env in envs},
        }

    def _authorize(self, caller: Caller, permission: Permission, env: str | None = None) -> None:
        authorize(caller, permission, env, self.policy())


def _env_summary(flag: Flag, env: str) -> dict[str, Any]:
    state = flag.state(env)
    return {
        "on": state.on,
        "rules": len(state.rules),
        "rollout": state.rollout.percentage if state.rollout is not None else None,
        "serves": state.serve or flag.default if state.on else flag.off,
    }


def _reason(reason: object) -> str:
    if not isinstance(reason, str) or not reason.strip():
        raise UsageError(
            "a flag change needs a reason (it goes on the ledger)",
            hint='--reason "why", e.g. --reason "INC-42: checkout errors"',
        )
    if len(reason) > MAX_REASON:
        raise UsageError(f"the reason is longer than {MAX_REASON} characters")
    return reason.strip()


def _aligned(a: Flag, b: Flag) -> tuple[dict[str, Any], dict[str, Any]]:
    """Both flags' JSON with the same environments (an unnamed one is off), so a diff shows
    what evaluates differently, not what is spelled differently."""
    envs = set(a.environments) | set(b.environments)
    left, right = flag_to_json(a), flag_to_json(b)
    for env in envs:
        left["environments"][env] = state_to_json(a.state(env))
        right["environments"][env] = state_to_json(b.state(env))
    return left, right


def _same(a: Flag, b: Flag) -> bool:
    left, right = _aligned(a, b)
    return left == right
