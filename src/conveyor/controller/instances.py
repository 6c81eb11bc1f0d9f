"""A stored release's plan, turned into the runtime's recipe for one more instance."""

from __future__ import annotations

import uuid
from pathlib import Path

from conveyor.core.model import InstanceSpec
from conveyor.store.records import ReleaseRecord


def instance_spec(
    project_name: str, release: ReleaseRecord, artifact_dir: Path, commit: str | None
) -> InstanceSpec:
    """Everything the runtime needs to start an instance of ``release``, from its plan only."""
    template = release.plan.instance
    environment = {
        **release.config,
        "CONVEYOR_SERVICE": release.service,
        "CONVEYOR_ENV": release.env,
        "CONVEYOR_VERSION": (commit or release.artifact_digest.removeprefix("sha256:"))[:12],
        "CONVEYOR_REVISION": str(release.revision),
        "CONVEYOR_ARTIFACT": release.artifact_digest,
    }
    return InstanceSpec(
        instance_id=f"{release.service}-{release.env}-r{release.revision}-{uuid.uuid4().hex[:6]}",
        project=project_name,
        service=release.service,
        env=release.env,
        version=release.template,
        revision=release.revision,
        artifact_digest=release.artifact_digest,
        artifact_dir=artifact_dir,
        command=template.command,
        environment=environment,
        port_env=template.port_env,
        readiness=template.readiness,
        liveness=template.liveness,
        stop_grace=template.stop_grace,
        secrets=release.plan.secrets,
        run_as=template.run_as,
    )
