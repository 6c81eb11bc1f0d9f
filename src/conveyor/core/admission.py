"""Whether a release may start: the "design the exit before the entry" rules, as pure checks.

The controller gathers the facts (what is rolling out now, what users would return to, whether
that artifact is still on disk) and these functions say yes, or no with a reason and a fix.
Promotion requirements (``unmet_requirements``) answer with every unmet requirement at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from conveyor.core.state import Phase
from conveyor.errors import AlreadyDeployed, Conflict, Refused


@dataclass(frozen=True)
class Candidate:
    service: str
    env: str
    template: str
    instances: int
    artifact_services: tuple[str, ...]  # every service the artifact was built for


@dataclass(frozen=True)
class Current:
    """A release already recorded for the same service and environment."""

    revision: int
    template: str
    instances: int
    phase: Phase
    ready: int | None = None  # its instances ready now (None: not observed)


Admission = Literal["start", "restore"]
"""``start``: create the release. ``restore``: the environment already runs exactly this,
short of instances; bring it back to its size instead of releasing it again."""


def admit(
    candidate: Candidate,
    *,
    active: Current | None,
    stable: Current | None,
    stable_artifact_present: bool,
) -> Admission:
    """Raise why this release must not start; say how to proceed when it may."""
    where = f"{candidate.service} in {candidate.env}"
    if candidate.service not in candidate.artifact_services:
        built_for = ", ".join(repr(s) for s in candidate.artifact_services) or "no service"
        raise Refused(
            f"the artifact was built for {built_for}, not {candidate.service!r}",
            hint=f"build it with `conveyor build {candidate.service}` (the same bytes are "
            "recorded for each service they are built for) and deploy that digest",
        )
    if active is not None and active.phase.in_progress:
        raise Conflict(
            f"r{active.revision} of {where} is still rolling out ({active.phase})",
            hint=f"wait for it (`conveyor status --env {candidate.env}`), or abort it with "
            f"`conveyor rollback {candidate.service} --env {candidate.env}`",
        )
    if stable is None:
        return "start"
    if not stable_artifact_present:
        raise Refused(
            f"there is no way back: the artifact of r{stable.revision} ({where}) is missing "
            "from the artifact store",
            hint="restore .conveyor/artifacts from a backup, or redeploy a known-good build "
            "before shipping something new",
        )
    if stable.template == candidate.template and stable.instances == candidate.instances:
        if stable.ready is not None and stable.ready < stable.instances:
            # "Nothing to deploy" must never stand between users and a version that is
            # supposed to run: the same release is brought back to its size instead.
            return "restore"
        raise AlreadyDeployed(
            f"r{stable.revision} already runs this artifact with this config in {candidate.env}",
            hint="nothing to deploy; change the code (`--build`) or the config (`--set KEY=VALUE`)",
        )
    return "start"


@dataclass(frozen=True)
class Requirements:
    """What an environment demands of an artifact before it may run there (promotion)."""

    env: str
    environments: tuple[str, ...] = ()
    branches: tuple[str, ...] = ()
    gates: tuple[str, ...] = ()


@dataclass(frozen=True)
class ArtifactFacts:
    """What is known about one artifact: where it already ran well, where it came from."""

    digest: str
    branch: str | None
    dirty: bool | None
    succeeded_in: frozenset[str] = frozenset()
    gates: Mapping[str, str] = field(default_factory=dict)


def unmet_requirements(requirements: Requirements, facts: ArtifactFacts) -> list[str]:
    """Every requirement the artifact lacks, as sentences, in declaration order; [] = admit.

    All of them, not the first: a refused deploy should tell the whole story at once, so the
    user does not fix one thing only to be refused for the next.
    """
    short = f"sha256:{facts.digest.removeprefix('sha256:')[:12]}…"
    unmet = [
        f"no successful release of {short} in {env}"
        for env in requirements.environments
        if env not in facts.succeeded_in
    ]
    if requirements.branches:
        allowed = " or ".join(requirements.branches)
        if facts.branch is None:
            unmet.append(
                f"{short} has no recorded git branch; {requirements.env} requires {allowed}"
            )
        elif facts.branch not in requirements.branches:
            unmet.append(
                f"built from branch '{facts.branch}'; {requirements.env} requires {allowed}"
            )
        if facts.branch is not None and facts.dirty is not False:
            state = "uncommitted changes" if facts.dirty else "an unknown working tree state"
            unmet.append(
                f"built from {state}; {requirements.env} requires a clean commit on {allowed}"
            )
    for gate in requirements.gates:
        result = facts.gates.get(gate)
        if result is None:
            unmet.append(f"gate '{gate}' has no passing result")
        elif result != "success":
            unmet.append(f"gate '{gate}' did not pass ({result})")
    return unmet
