"""Roles per environment from ``access:`` — in force only once an admin applies them.

``access:`` in conveyor.yaml names groups of identities and grants them roles per
environment::

    access:
      groups:
        sre: [alice@laptop, dana]
        ci: [ci-shop]
      environments:
        production: {deployer: [group:ci], approver: [group:sre], emergency: [group:sre]}
        "*": {deployer: [group:sre, group:ci], approver: [group:sre]}   # every other one

The file is reviewed code, but reading it live would let anyone who can edit it grant
themselves approval rights. So the policy in force is the one an admin last **applied**
(``conveyor access apply``): it is stored on the ledger as an ``access.applied`` event with
its content and the change against the previous one, and nothing else changes it.

What a caller may do is the intersection of its token (role and environments) and this
policy. With no policy applied, the token alone decides (the roles of ``access.py``).
Roles granted per environment: ``viewer``, ``deployer``, ``approver``, ``admin``,
``emergency``; ``admin`` in an environment includes the others there except ``emergency``,
which is only ever granted by name — using it is an exception, not a privilege of rank.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from conveyor.store.repository import Store

ROLES = ("viewer", "deployer", "approver", "admin", "emergency")
_IMPLIED = {
    "viewer": {"viewer"},
    "deployer": {"viewer", "deployer"},
    "approver": {"viewer", "approver"},
    "admin": {"viewer", "deployer", "approver", "admin"},
    "emergency": {"emergency"},
}


@dataclass(frozen=True)
class Policy:
    """An applied ``access:`` block: groups, and per environment the members of each role."""

    groups: Mapping[str, frozenset[str]] = field(default_factory=dict)
    environments: Mapping[str, Mapping[str, tuple[str, ...]]] = field(default_factory=dict)
    version: int = 0  # the ledger seq of the access.applied event; 0: none applied

    def members(self, reference: str) -> frozenset[str]:
        """``group:sre`` -> its identities; ``user:dana`` or ``dana`` -> {dana}; ``*``: all."""
        if reference.startswith("group:"):
            return self.groups.get(reference.removeprefix("group:"), frozenset())
        return frozenset({reference.removeprefix("user:")})

    def roles(self, identity: str, env: str | None) -> frozenset[str]:
        """The roles ``identity`` holds in ``env`` (None: any environment's, for env-less acts).

        An environment with a block of its own is governed by that block alone; ``*`` is
        the block of every environment without one (so "production: deployer: [group:ci]"
        means CI only, whatever ``*`` grants).
        """
        if env is None:
            envs = list(self.environments)
        else:
            envs = [env] if env in self.environments else ["*"]
        granted: set[str] = set()
        for name in envs:
            for role, references in (self.environments.get(name) or {}).items():
                if any(_matches(identity, self.members(r)) for r in references):
                    granted |= _IMPLIED.get(role, set())
        return frozenset(granted)

    def to_json(self) -> dict[str, Any]:
        return {
            "groups": {name: sorted(members) for name, members in sorted(self.groups.items())},
            "environments": {
                env: {role: list(refs) for role, refs in sorted(grants.items())}
                for env, grants in sorted(self.environments.items())
            },
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], version: int = 0) -> Policy:
        return cls(
            groups={str(k): frozenset(map(str, v)) for k, v in (data.get("groups") or {}).items()},
            environments={
                str(env): {str(role): tuple(map(str, refs)) for role, refs in grants.items()}
                for env, grants in (data.get("environments") or {}).items()
            },
            version=version,
        )


def _matches(identity: str, members: Iterable[str]) -> bool:
    lowered = identity.lower()
    return any(m == "*" or m.lower() == lowered for m in members)


def diff(before: Policy, after: Policy) -> dict[str, Any]:
    """Who gained and who lost which role where: the ledger's account of an apply."""
    changes: list[dict[str, str]] = []
    envs = set(before.environments) | set(after.environments)
    for env in sorted(envs):
        for role in ROLES:
            old = {
                m
                for r in (before.environments.get(env) or {}).get(role, ())
                for m in before.members(r)
            }
            new = {
                m
                for r in (after.environments.get(env) or {}).get(role, ())
                for m in after.members(r)
            }
            changes += [{"env": env, "role": role, "granted": m} for m in sorted(new - old)]
            changes += [{"env": env, "role": role, "revoked": m} for m in sorted(old - new)]
    return {"changes": changes}


def _holders(policy: Policy, env: str, role: str) -> set[str]:
    references = (policy.environments.get(env) or {}).get(role, ())
    return {member for reference in references for member in policy.members(reference)}


class PolicySource:
    """The policy in force: the newest ``access.applied`` on the ledger.

    Read again at most every ``refresh`` seconds (another server may apply one), and at
    once after this server applied one.
    """

    def __init__(self, store: Store, clock: Callable[[], float], refresh: float = 2.0) -> None:
        self.store = store
        self.clock = clock
        self.refresh = refresh
        self._cached: Policy | None = None
        self._read_at = 0.0
        self._lock = threading.Lock()

    def current(self) -> Policy:
        with self._lock:
            now = self.clock()
            if self._cached is None or now - self._read_at >= self.refresh:
                event = self.store.latest_event("access.applied")
                policy = event.details.get("policy") if event is not None else None
                # Applying a file without ``access:`` returns to tokens alone (version 0).
                self._cached = (
                    Policy()
                    if event is None or policy is None
                    else Policy.from_json(policy, version=event.seq)
                )
                self._read_at = now
            return self._cached

    def forget(self) -> None:
        with self._lock:
            self._cached = None
