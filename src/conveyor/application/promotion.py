"""The facts a promotion requirement is checked against, gathered one way for everyone.

Deploy (``releases``) decides with them and evidence (``evidence``) reports them; both must
see the same thing, or the report would explain a decision that was made differently.
"""

from __future__ import annotations

from conveyor.artifacts.attestations import Attested
from conveyor.config.loader import LoadedProject
from conveyor.core.admission import ArtifactFacts, Requirements
from conveyor.store.records import ArtifactRecord
from conveyor.store.repository import Store

HISTORY = 200
"""Releases per environment searched for a success of the same digest."""


def requirements_of(project: LoadedProject, env: str) -> Requirements:
    declared = project.config.environment(env).requires
    return Requirements(
        env, tuple(declared.environments), tuple(declared.branches), tuple(declared.gates)
    )


def artifact_facts(
    store: Store,
    service: str,
    record: ArtifactRecord,
    requirements: Requirements,
    attested: Attested,
) -> ArtifactFacts:
    """Where ``record`` already succeeded (of the environments required), its origin, and
    the gate results of its signed attestations (never a database row)."""
    succeeded_in = frozenset(
        other
        for other in requirements.environments
        if any(
            r.artifact_digest == record.digest and r.phase == "succeeded"
            for r in store.releases(service, other, limit=HISTORY)
        )
    )
    return ArtifactFacts(record.digest, record.branch, record.dirty, succeeded_in, attested.gates())
