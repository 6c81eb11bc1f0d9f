"""``ReleasePlan``: everything a release will run and be judged by, frozen when it is created.

A release is a promise made at one moment: run *these* bytes with *this* config, expose
them with *this* strategy, judge them by *these* analysis templates and triggers, tell
*these* people. The plan is built once, from the config of that moment, and stored with
the release; everything that runs or judges the release reads the plan, never today's
conveyor.yaml. So a canary started last week is judged by the templates it started with, a
broken conveyor.yaml cannot silently drop a running release's notifications, and a
rollback re-runs the plan of the release it returns to even while the file is broken.

What is *not* in the plan is what the store decides: the release's id and revision (the
store numbers releases; ``rollout_spec`` takes them as arguments), and the live status.

The JSON form carries ``format`` so a later Conveyor can read plans written by this one.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from conveyor.core.analysis import AnalysisTemplate
from conveyor.core.approval import ApprovalRule
from conveyor.core.migrations import MigrateSpec
from conveyor.core.model import ProbeSpec, SecretRef
from conveyor.core.release import config_version, template_key
from conveyor.core.retry import RetryPolicy
from conveyor.core.state import RolloutSpec, StrategySpec, Triggers

PLAN_FORMAT = 1


@dataclass(frozen=True)
class InstanceTemplate:
    """How every instance of the release is started and stopped."""

    command: str | tuple[str, ...]  # a string runs via /bin/sh -c; a tuple is exec'd directly
    port_env: str = "PORT"
    readiness: ProbeSpec | None = None
    liveness: ProbeSpec | None = None
    stop_grace: float = 10.0
    drain_timeout: float = 30.0
    run_as: str | None = None
    """The user ("user[:group]") the instances run as; None: the server's own. Frozen like
    the rest, so a rollback runs the old version as the user it ran as then."""

    def to_json(self) -> dict[str, Any]:
        data = {
            "command": self.command if isinstance(self.command, str) else list(self.command),
            "port_env": self.port_env,
            "readiness": _probe_json(self.readiness),
            "liveness": _probe_json(self.liveness),
            "stop_grace": self.stop_grace,
            "drain_timeout": self.drain_timeout,
        }
        if self.run_as is not None:  # absent rather than null: plans without it read as before
            data["run_as"] = self.run_as
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> InstanceTemplate:
        command = data["command"]
        return cls(
            command=command if isinstance(command, str) else tuple(command),
            port_env=str(data.get("port_env", "PORT")),
            readiness=_probe(data.get("readiness")),
            liveness=_probe(data.get("liveness")),
            stop_grace=float(data.get("stop_grace", 10.0)),
            drain_timeout=float(data.get("drain_timeout", 30.0)),
            run_as=None if data.get("run_as") is None else str(data["run_as"]),
        )


def _probe_json(probe: ProbeSpec | None) -> dict[str, Any] | None:
    return None if probe is None else dataclasses.asdict(probe)


def _probe(data: Mapping[str, Any] | None) -> ProbeSpec | None:
    return None if data is None else ProbeSpec(**data)


@dataclass(frozen=True)
class NotifyTarget:
    """A webhook that hears about the events people act on. The secret is named, never held."""

    webhook: str
    events: tuple[str, ...]
    secret_env: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"webhook": self.webhook, "events": list(self.events), "secret_env": self.secret_env}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> NotifyTarget:
        return cls(str(data["webhook"]), tuple(data.get("events", ())), data.get("secret_env"))


@dataclass(frozen=True)
class StableRef:
    """The release users return to if this one is rolled back: its exit, designed up front."""

    release_id: int
    revision: int
    version: str  # template key of its instances
    desired: int

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StableRef:
        return cls(
            int(data["release_id"]),
            int(data["revision"]),
            str(data["version"]),
            int(data["desired"]),
        )


@dataclass(frozen=True)
class ReleasePlan:
    """The frozen description of one release; see the module docstring."""

    service: str
    env: str
    artifact: str  # "sha256:<hex>"
    config: Mapping[str, str]  # literal values; secret ones are in ``secrets``
    instance: InstanceTemplate
    desired: int
    strategy: StrategySpec
    progress_deadline: float = 60.0
    triggers: Triggers = field(default_factory=Triggers)
    preview_check: bool = True
    analysis: Mapping[str, AnalysisTemplate] = field(default_factory=dict)
    notify: tuple[NotifyTarget, ...] = ()
    router: str | None = "builtin"  # None: a release stored before plans (use the env's)
    pinned_port: int | None = None
    stable: StableRef | None = None
    commit: str | None = None
    secrets: Mapping[str, SecretRef] = field(default_factory=dict)
    """Config keys whose value is a secret, by reference: the runtime reads the value when an
    instance starts, so the plan (the store, the ledger, the API) never holds it."""
    approval: ApprovalRule | None = None
    """People who must approve before it starts (the environment's ``approval:``)."""
    authors: tuple[str, ...] = ()
    """Authors of the commits it brings (``Name <email>``), for the not-the-author rule."""
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    """How the router answers this release's failed idempotent requests from the stable
    version while it is a canary (``core.retry``)."""
    migrate: MigrateSpec | None = None
    """The service's ``migrate:`` step (run once before new instances start) and the
    migrations the artifact holds, classified (``core.migrations``)."""

    @property
    def content_hash(self) -> str:
        """What an approval is bound to: everything the release will run and be judged by."""
        text = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()

    @functools.cached_property
    def version(self) -> str:
        """The template key: what makes two instances interchangeable (see core.release).
        Computed once per plan (a plan is frozen; status pages ask for it thousands of times)."""
        return template_key(
            self.artifact,
            self.config,
            self.instance.command,
            self.instance.port_env,
            self.secrets,
            self.instance.run_as,
        )

    @property
    def config_version(self) -> str:
        return config_version(self.config, self.secrets)

    def config_shown(self) -> dict[str, object]:
        """The config as people may see it: values, and each secret as its reference."""
        shown: dict[str, object] = dict(self.config)
        shown.update({k: {"secret": ref.to_json()} for k, ref in self.secrets.items()})
        return dict(sorted(shown.items()))

    def rollout_spec(self, release_id: int, revision: int) -> RolloutSpec:
        """What ``core.rollout.decide`` needs, once the store has numbered the release."""
        stable = self.stable
        return RolloutSpec(
            release_id=release_id,
            revision=revision,
            version=self.version,
            desired=self.desired,
            strategy=self.strategy,
            progress_deadline=self.progress_deadline,
            triggers=self.triggers,
            stable_version=stable.version if stable else None,
            stable_revision=stable.revision if stable else None,
            stable_desired=stable.desired if stable else 0,
            preview_check=self.preview_check,
            migrate=self.migrate is not None and self.migrate.run is not None,
        )

    def evolve(self, **changes: Any) -> ReleasePlan:
        return dataclasses.replace(self, **changes)

    def returning(self, stable: StableRef | None) -> ReleasePlan:
        """This plan run again as a rollback: same bytes, config and instances, back quickly.

        A rollback is an exit, not an experiment: canary steps and background analysis are
        dropped (users go straight back, as Argo Rollouts' rollback window does) and the
        release it leaves becomes the new way back. It never migrates: old code may not know
        newer revisions, and an expand is compatible with it by construction.
        """
        strategy = self.strategy
        if strategy.kind == "canary":
            strategy = dataclasses.replace(strategy, steps=(), background_analysis=None)
        # Rollbacks never wait for approval: the exit is always open.
        migrate = self.migrate.returning() if self.migrate is not None else None
        return dataclasses.replace(
            self, strategy=strategy, stable=stable, approval=None, migrate=migrate
        )

    def to_json(self) -> dict[str, Any]:
        data = {
            "format": PLAN_FORMAT,
            "service": self.service,
            "env": self.env,
            "artifact": self.artifact,
            "commit": self.commit,
            "config": dict(self.config),
            "instance": self.instance.to_json(),
            "desired": self.desired,
            "strategy": self.strategy.to_json(),
            "progress_deadline": self.progress_deadline,
            "triggers": dataclasses.asdict(self.triggers),
            "preview_check": self.preview_check,
            "analysis": {name: t.to_json() for name, t in self.analysis.items()},
            "notify": [n.to_json() for n in self.notify],
            "router": self.router,
            "pinned_port": self.pinned_port,
            "stable": self.stable.to_json() if self.stable else None,
        }
        # Absent rather than empty: plans without them read (and hash) as before.
        if self.secrets:
            data["secrets"] = {k: ref.to_json() for k, ref in self.secrets.items()}
        if self.approval is not None:
            data["approval"] = self.approval.to_json()
        if self.authors:
            data["authors"] = list(self.authors)
        if self.migrate is not None:
            data["migrate"] = self.migrate.to_json()
        if self.retry != RetryPolicy():
            data["retry"] = self.retry.to_json()
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ReleasePlan:
        if data.get("format") != PLAN_FORMAT:
            raise ValueError(f"unknown release plan format {data.get('format')!r}")
        stable = data.get("stable")
        return cls(
            service=str(data["service"]),
            env=str(data["env"]),
            artifact=str(data["artifact"]),
            commit=data.get("commit"),
            config={str(k): str(v) for k, v in data["config"].items()},
            instance=InstanceTemplate.from_json(data["instance"]),
            desired=int(data["desired"]),
            strategy=StrategySpec.from_json(data["strategy"]),
            progress_deadline=float(data["progress_deadline"]),
            triggers=Triggers(**data["triggers"]),
            preview_check=bool(data["preview_check"]),
            analysis={
                str(name): AnalysisTemplate.from_json(t)
                for name, t in (data.get("analysis") or {}).items()
            },
            notify=tuple(NotifyTarget.from_json(n) for n in data.get("notify") or ()),
            router=data.get("router"),
            pinned_port=data.get("pinned_port"),
            stable=StableRef.from_json(stable) if stable else None,
            secrets={
                str(k): SecretRef.from_json(v) for k, v in (data.get("secrets") or {}).items()
            },
            approval=ApprovalRule.from_json(data["approval"]) if data.get("approval") else None,
            authors=tuple(str(a) for a in data.get("authors") or ()),
            migrate=MigrateSpec.from_json(data["migrate"]) if data.get("migrate") else None,
            retry=RetryPolicy.from_json(data["retry"]) if data.get("retry") else RetryPolicy(),
        )
