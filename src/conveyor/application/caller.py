"""Who is asking: the identity, role and scope every operation of the application layer gets.

Every operation takes a ``Caller``; the ledger's actor is ``caller.actor``. Through the API
it is built from the bearer token (``access.Tokens.authenticate``), never from anything the
client claims. In-process callers — the server itself, and tests driving the application
directly — are admins of every environment.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

SYSTEM = "conveyor"


class Role(IntEnum):
    """Roles are ordered: each has what the one below it has."""

    VIEWER = 1
    DEPLOYER = 2
    ADMIN = 3


@dataclass(frozen=True)
class Caller:
    actor: str
    role: Role = Role.ADMIN
    environments: frozenset[str] | None = None  # None: every environment
    token: str | None = None  # the token's public id, when called through the API

    @classmethod
    def system(cls) -> Caller:
        """Conveyor itself (the controller, the server at start)."""
        return cls(SYSTEM)

    def role_in(self, env: str | None) -> Role:
        """The caller's role where a change would happen: none outside its environments."""
        if env is None or self.environments is None or env in self.environments:
            return self.role
        return Role.VIEWER if self.role >= Role.VIEWER else self.role

    def scope_text(self) -> str:
        where = (
            "every environment"
            if self.environments is None
            else ", ".join(sorted(self.environments))
        )
        return f"{self.role.name.lower()} in {where}"
