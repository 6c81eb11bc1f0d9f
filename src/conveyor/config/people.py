"""``access:`` and ``approval:`` — the people in the loop, as conveyor.yaml states them.

``access:`` (top level) names groups of identities and grants roles per environment; it is
only a *proposal* until an admin applies it (``conveyor access apply``, see
``application/policy.py``). ``approval:`` (per environment) says who must approve a release
before it runs there; it is frozen into each release's plan.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from conveyor.config.durations import Duration, PositiveDuration
from conveyor.config.suggest import describe, invalid

IDENTITY_PATTERN = r"^[A-Za-z0-9*][A-Za-z0-9@._+*-]{0,127}$"
REFERENCE_PATTERN = r"^(group:[a-z0-9][a-z0-9-]*|user:[A-Za-z0-9][A-Za-z0-9@._+-]{0,127}|\*)$"
Role = Literal["viewer", "deployer", "approver", "admin", "emergency"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _reference(value: object) -> object:
    """``sre`` alone would be ambiguous (a group? a person?): say which."""
    if isinstance(value, str) and not re.fullmatch(REFERENCE_PATTERN, value):
        raise invalid(
            f"{describe(value)} is not a reference to people",
            "write group:NAME (a group under access.groups), user:IDENTITY (a token's name) "
            "or * (everyone with a token)",
        )
    return value


Reference = Annotated[str, BeforeValidator(_reference)]


class AccessConfig(_Model):
    """Groups of identities and the roles they hold per environment (``*``: every one)."""

    groups: dict[Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]*$")], list[str]] = Field(
        default_factory=dict,
        description="Group name -> identities (token names), e.g. sre: [alice@laptop, dana].",
        examples=[{"sre": ["alice@laptop", "dana"], "ci": ["ci-shop"]}],
    )
    environments: dict[str, dict[Role, list[Reference]]] = Field(
        default_factory=dict,
        description="Environment (or *) -> role -> who holds it: group:NAME, user:IDENTITY "
        "or *. Roles: viewer, deployer, approver, admin, emergency.",
        examples=[{"production": {"deployer": ["group:ci"], "approver": ["group:sre"]}}],
    )

    @field_validator("groups")
    @classmethod
    def _identities(cls, groups: dict[str, list[str]]) -> dict[str, list[str]]:
        for name, members in groups.items():
            for member in members:
                if not re.fullmatch(IDENTITY_PATTERN, member):
                    raise invalid(
                        f"group {name}: {describe(member)} is not an identity",
                        "identities are token names: letters, digits and @ . _ + -",
                    )
        return groups


class ApprovalConfig(_Model):
    """People who must approve a release before it runs in this environment."""

    required: Annotated[int, Field(ge=1, le=10)] = Field(
        1, description="How many distinct people must approve."
    )
    from_: list[Reference] = Field(
        default_factory=list,
        alias="from",
        description="Who may approve: group:NAME, user:IDENTITY; empty: anyone with the "
        "approver role here.",
        examples=[["group:sre", "user:dana"]],
    )
    prevent_self_review: bool = Field(
        True,
        description="Whoever asked for the release, and the authors of the commits it brings, "
        "cannot approve it.",
    )
    wait_timer: Duration = Field(
        0.0, description="After the last approval, wait this long before the rollout starts."
    )
    expires: PositiveDuration = Field(
        86400.0,
        description="A request (and an approval) older than this no longer counts; the "
        "release is cancelled.",
    )

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
