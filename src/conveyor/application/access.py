"""Who may do what: tokens, roles and the one authorization check every operation makes.

Every API call but the health check carries a bearer token. A token stands for an
identity (``alice@laptop``, ``ci-shop``), has one role and is scoped to environments:

    viewer     read: status, history, events, evidence, logs, metrics
    deployer   viewer + publish artifacts, attestations and pipeline events, and deploy,
               roll back and steer rollouts in its environments
    admin      deployer everywhere + tokens and key rotation

What a caller may do is checked here, in the application layer, by ``authorize`` — the
API only turns the token into a ``Caller`` — so no door can skip it. The ledger's actor is
the token's identity, never a name the client announces.

Secrets are ``cvy_`` + 43 url-safe characters (256 bits; the prefix lets secret scanners
recognise them), shown once, stored as their sha256. ``conveyor up`` (the server's first
start) creates an admin token for the local user in ``.conveyor/admin.token`` (0600), which
the CLI uses when no ``CONVEYOR_TOKEN`` is set, so the README's commands need no setup.

Roles per environment for groups of people, approvers and the emergency path come with the
"people in the loop" work and plug in here (``Caller.role_in``).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from conveyor.application.caller import SYSTEM, Caller, Role
from conveyor.application.policy import Policy
from conveyor.errors import Forbidden, Unauthenticated, UsageError
from conveyor.layout import private_file
from conveyor.store.records import TokenRecord
from conveyor.store.repository import Store

PREFIX = "cvy_"
_SECRET = re.compile(r"cvy_[A-Za-z0-9_-]{43}")
_IDENTITY = re.compile(r"[A-Za-z0-9][A-Za-z0-9@._+-]{0,127}")
_ENV = re.compile(r"[a-z0-9][a-z0-9-]*|\*")
TOUCH_EVERY = 60.0
"""Seconds between two writes of a token's ``last_used_at`` (reads must not write often)."""


class Permission(Enum):
    """What an operation needs: the least token role, and the role ``access:`` must grant."""

    # (name, least token role, role an applied policy must grant); the name keeps members
    # with equal roles distinct (an Enum would otherwise make them aliases).
    READ = ("read", Role.VIEWER, "viewer")
    PUBLISH = ("publish", Role.DEPLOYER, "deployer")  # artifacts, attestations, pipeline events
    DEPLOY = ("deploy", Role.DEPLOYER, "deployer")  # releases and rollout controls, per env
    APPROVE = ("approve", Role.VIEWER, "approver")  # a vote on a release waiting for people
    EMERGENCY = ("emergency", Role.DEPLOYER, "emergency")  # skip approval and windows
    ADMIN = ("admin", Role.ADMIN, "admin")

    @property
    def token_role(self) -> Role:
        return Role(self.value[1])

    @property
    def policy_role(self) -> str:
        return str(self.value[2])


_VERBS = {
    Permission.READ: "read",
    Permission.PUBLISH: "publish artifacts",
    Permission.DEPLOY: "deploy",
    Permission.APPROVE: "approve releases",
    Permission.EMERGENCY: "use the emergency path",
    Permission.ADMIN: "administer",
}
_SCOPED = (Permission.DEPLOY, Permission.APPROVE, Permission.EMERGENCY)


def authorize(
    caller: Caller,
    permission: Permission,
    env: str | None = None,
    policy: Policy | None = None,
) -> None:
    """Raise ``Forbidden`` unless ``caller`` may do ``permission`` (in ``env``, if named).

    The token decides the most a caller may do (its role, its environments); an applied
    ``access:`` policy narrows it per environment (``policy.py``). Conveyor itself (the
    server's own caller) is never narrowed.
    """
    applied = policy is not None and policy.version > 0
    scoped = permission in _SCOPED
    role = caller.role_in(env) if scoped else caller.role
    allowed = role >= permission.token_role
    if scoped and env is not None and caller.environments is not None:
        # A token scoped to some environments acts in those only, whatever a policy grants.
        allowed = allowed and env in caller.environments
    if permission is Permission.APPROVE and not applied:
        allowed = role >= Role.DEPLOYER  # without a policy, approvers are deployers there
    if permission is Permission.EMERGENCY and not applied:
        allowed = role >= Role.ADMIN  # without a policy, only admins break glass
    narrowed = False
    if allowed and applied and caller.actor != SYSTEM and permission not in _UNNARROWED:
        assert policy is not None
        allowed = permission.policy_role in policy.roles(caller.actor, env if scoped else None)
        narrowed = not allowed
    if allowed:
        return
    verb = _VERBS[permission]
    if env is not None and permission is Permission.DEPLOY:
        verb = f"deploy to {env}"
    elif env is not None and scoped:
        verb = f"{verb} in {env}"
    if narrowed:
        assert policy is not None
        hint = (
            f"the access policy in force (v{policy.version}) does not grant {caller.actor} "
            f"the {permission.policy_role} role"
            + (f" in {env}" if env else "")
            + "; change access: in conveyor.yaml and have an admin apply it "
            "(`conveyor access apply`)"
        )
    else:
        hint = (
            "ask an admin for a token that allows it: conveyor tokens create NAME "
            f"--role {permission.token_role.name.lower()}"
            + (f" --env {env}" if env and scoped else "")
        )
    raise Forbidden(f"{caller.actor} ({caller.scope_text()}) may not {verb}", hint=hint)


_UNNARROWED = (Permission.READ, Permission.ADMIN)
"""Reading needs only a token; administering (tokens, keys, the policy itself) only an admin
token — a policy that locked its admins out could never be fixed."""


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass
class Tokens:
    store: Store
    clock: Callable[[], float]

    def __post_init__(self) -> None:
        self._touched: dict[str, float] = {}
        self._lock = threading.Lock()

    def authenticate(self, secret: str | None) -> Caller:
        """The caller a bearer token stands for; ``Unauthenticated`` otherwise."""
        hint = (
            "pass a token: the CLI reads CONVEYOR_TOKEN or .conveyor/admin.token; an admin "
            "creates more with `conveyor tokens create`"
        )
        if not secret:
            raise Unauthenticated("this API needs a token (Authorization: Bearer ...)", hint=hint)
        if not _SECRET.fullmatch(secret):
            raise Unauthenticated("that is not a Conveyor token", hint=hint)
        record = self.store.token_by_hash(secret_hash(secret))
        now = self.clock()
        if record is None or not record.usable(now):
            why = (
                "unknown"
                if record is None
                else ("revoked" if record.revoked_at is not None else "expired")
            )
            raise Unauthenticated(f"the token is {why}", hint=hint)
        self._touch(record.id, now)
        return caller_of(record)

    def issue(
        self,
        caller: Caller,
        identity: str,
        role: str,
        environments: Iterable[str] = ("*",),
        expires_in: float | None = None,
    ) -> tuple[str, TokenRecord]:
        """A new token; returns its secret (shown once) and its record."""
        authorize(caller, Permission.ADMIN)
        if not _IDENTITY.fullmatch(identity):
            raise UsageError(
                f"{identity!r} is not a token name",
                hint="letters, digits and @ . _ + -, e.g. ci-shop or alice@laptop",
            )
        try:
            parsed = Role[role.upper()]
        except KeyError:
            raise UsageError(
                f"unknown role {role!r}", hint="one of: viewer, deployer, admin"
            ) from None
        envs = tuple(sorted(set(environments))) or ("*",)
        for env in envs:
            if not _ENV.fullmatch(env):
                raise UsageError(f"{env!r} is not an environment name (or *)")
        if expires_in is not None and not 0 < expires_in <= 10 * 365 * 86400:
            raise UsageError("a token expires between now and ten years from now")
        secret = PREFIX + secrets.token_urlsafe(32)
        record = TokenRecord(
            id="tok_" + secrets.token_hex(6),
            identity=identity,
            role=parsed.name.lower(),
            environments=envs,
            created_at=self.clock(),
            created_by=caller.actor,
            expires_at=None if expires_in is None else self.clock() + expires_in,
        )
        stored = self.store.create_token(record, secret_hash(secret), actor=caller.actor)
        return secret, stored

    def list(self, caller: Caller) -> list[TokenRecord]:
        authorize(caller, Permission.ADMIN)
        return self.store.tokens()

    def revoke(self, caller: Caller, token_id: str) -> TokenRecord:
        authorize(caller, Permission.ADMIN)
        return self.store.revoke_token(token_id, actor=caller.actor)

    def bootstrap(self, path: Path, identity: str) -> None:
        """Make sure ``path`` holds a usable admin token for the local user (0600).

        Run at every server start: a token file that was deleted, revoked or expired is
        replaced. Whoever can start this project's server can already read its state, so
        this grants nobody anything new.
        """
        try:
            self.authenticate(path.read_text().strip())
            path.chmod(0o600)
            return
        except (OSError, Unauthenticated):
            pass
        system = Caller.system()
        secret, _ = self.issue(system, identity, "admin")
        private_file(path, secret + "\n")

    def _touch(self, token_id: str, now: float) -> None:
        with self._lock:
            last = self._touched.get(token_id)
            if last is not None and now - last < TOUCH_EVERY:
                return
            self._touched[token_id] = now
        self.store.token_used(token_id, now)


def caller_of(record: TokenRecord) -> Caller:
    envs = None if "*" in record.environments else frozenset(record.environments)
    return Caller(record.identity, Role[record.role.upper()], envs, token=record.id)
