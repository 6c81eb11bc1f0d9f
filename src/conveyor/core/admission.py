"""Whether a release may start: the "design the exit before the entry" rules, as pure checks.

The controller gathers the facts (what is rolling out now, what users would return to, whether
that artifact is still on disk) and these functions say yes, or no with a reason and a fix.
"""

from __future__ import annotations

from dataclasses import dataclass

from conveyor.errors import Conflict, Refused


@dataclass(frozen=True)
class Candidate:
    service: str
    env: str
    template: str
    instances: int
    artifact_service: str


@dataclass(frozen=True)
class Current:
    """A release already recorded for the same service and environment."""

    revision: int
    template: str
    instances: int
    phase: str


def admit(
    candidate: Candidate,
    *,
    active: Current | None,
    stable: Current | None,
    stable_artifact_present: bool,
) -> None:
    """Raise why this release must not start; return quietly when it may."""
    where = f"{candidate.service} in {candidate.env}"
    if candidate.artifact_service != candidate.service:
        raise Refused(
            f"the artifact was built for {candidate.artifact_service!r}, not {candidate.service!r}",
            hint=f"build it with `conveyor build {candidate.service}` and deploy that digest",
        )
    if active is not None and active.phase in (
        "pending",
        "progressing",
        "verifying",
        "rolling_back",
    ):
        raise Conflict(
            f"r{active.revision} of {where} is still rolling out ({active.phase})",
            hint=f"wait for it (`conveyor status --env {candidate.env}`), or abort it with "
            f"`conveyor rollback {candidate.service} --env {candidate.env}`",
        )
    if stable is None:
        return
    if not stable_artifact_present:
        raise Refused(
            f"there is no way back: the artifact of r{stable.revision} ({where}) is missing "
            "from the artifact store",
            hint="restore .conveyor/artifacts from a backup, or redeploy a known-good build "
            "before shipping something new",
        )
    if stable.template == candidate.template and stable.instances == candidate.instances:
        raise Conflict(
            f"r{stable.revision} already runs this artifact with this config in {candidate.env}",
            hint="nothing to deploy; change the code (`--build`) or the config (`--set KEY=VALUE`)",
        )
