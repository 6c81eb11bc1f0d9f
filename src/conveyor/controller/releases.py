"""Creating releases: deploys and manual rollbacks, checked before anything runs.

This is the only way a release enters the store. It re-reads `conveyor.yaml` each time (an
edited config applies to the next deploy without restarting the server), verifies the
artifact's digest and signed provenance (a refusal goes on the ledger), applies the admission
rules from ``core.admission`` (including the environment's promotion ``requires:``, whose
refusal goes on the ledger as ``release.refused``; rollbacks are exempt) and writes the
release and its ``release.created`` event in one transaction. The controller picks it up from there.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from conveyor.artifacts.attestations import verified_runs
from conveyor.artifacts.signing import verify_signed
from conveyor.artifacts.store import ArtifactStore
from conveyor.config.loader import LoadedProject
from conveyor.controller import specs
from conveyor.controller.promotion import artifact_facts, requirements_of
from conveyor.core.admission import (
    Candidate,
    Current,
    Requirements,
    admit,
    unmet_requirements,
)
from conveyor.core.release import config_version, merge_config, template_key
from conveyor.core.state import RolloutStatus
from conveyor.errors import NotFound, Refused
from conveyor.store.records import ArtifactRecord, NewEvent, NewRelease, ReleaseRecord
from conveyor.store.repository import Store


@dataclass
class Releases:
    load_project: Callable[[], LoadedProject]
    store: Store
    artifacts: ArtifactStore

    def deploy(
        self,
        service: str,
        env: str,
        artifact: str,
        *,
        overrides: Mapping[str, str] | None = None,
        actor: str,
        reason: str = "deploy",
        rollback_of: int | None = None,
        base_config: Mapping[str, str] | None = None,
        instance_template: Mapping[str, Any] | None = None,
    ) -> ReleaseRecord:
        project = self.load_project()
        project.config.service(service)  # unknown names fail here, with suggestions
        project.config.environment(env)
        record = self.store.get_artifact(artifact)
        try:
            self.artifacts.verify(record.digest)
            verify_signed(self.artifacts, record.digest)
        except Refused as exc:
            # Refusals are evidence too: who tried to run which bytes, and why not.
            event = {"artifact": record.digest, "reason": exc.message, "hint": exc.hint}
            self.store.append_events(
                [NewEvent("artifact.refused", event, service=service, env=env)], actor=actor
            )
            raise
        if rollback_of is None:
            # Rollbacks are exempt: the exit must always be open, even to a build that would
            # not be admitted today (e.g. one that predates a new gate).
            self._check_requirements(project, service, env, record, actor=actor)
        config = merge_config(
            base_config
            if base_config is not None
            else project.config.effective_config(service, env),
            overrides or {},
        )
        template = dict(instance_template or specs.instance_template(project, service))
        version = template_key(record.digest, config, template["command"], template["port_env"])
        desired = project.config.effective_instances(service, env)
        stable = self.store.current_release(service, env)
        active = self.store.active_release(service, env)
        admit(
            Candidate(service, env, version, desired, artifact_service=record.service),
            active=_current(active),
            stable=_current(stable),
            stable_artifact_present=stable is None or self.artifacts.exists(stable.artifact_digest),
        )
        # The store assigns the revision; the spec needs it, so build with a placeholder and
        # let the controller read ids from the record (revision = previous + 1).
        previous = self.store.releases(service, env, limit=1)
        revision = previous[0].revision + 1 if previous else 1
        # Users stay exactly where the previous release left them until the rollout moves them.
        weights = dict(previous[0].status.get("weights", {})) if previous else {}
        rollout = specs.rollout_spec(
            project,
            release_id=0,
            revision=revision,
            service=service,
            env=env,
            version=version,
            desired=desired,
            stable=stable,
        )
        strategy = project.config.environment(env).strategy.model_dump(mode="json")
        return self.store.create_release(
            NewRelease(
                service=service,
                env=env,
                artifact_digest=record.digest,
                template=version,
                config=config,
                config_version=config_version(config),
                instances=desired,
                strategy=strategy,
                spec={"rollout": rollout.to_json(), "instance": template},
                status=RolloutStatus(weights=weights).to_json(),
                phase="pending",
                stable_release_id=stable.id if stable else None,
                rollback_of=rollback_of,
                reason=reason,
            ),
            actor=actor,
            events=[
                NewEvent(
                    "release.created",
                    {
                        "artifact": record.digest,
                        "commit": record.commit,
                        "branch": record.branch,
                        "config_version": config_version(config),
                        "config_changes": _diff(stable.config if stable else {}, config),
                        "overrides": sorted((overrides or {}).keys()),
                        "strategy": strategy,
                        "instances": desired,
                        "exit": {
                            "stable_revision": stable.revision if stable else None,
                            "stable_artifact": stable.artifact_digest if stable else None,
                        },
                        "reason": reason,
                        "rollback_of": rollback_of,
                        "run": specs.command_text(template["command"]),
                    },
                )
            ],
        )

    def _check_requirements(
        self, project: LoadedProject, service: str, env: str, record: ArtifactRecord, *, actor: str
    ) -> None:
        """Refuse an artifact that lacks anything ``requires:`` demands, naming every gap."""
        requirements = requirements_of(project, env)
        if requirements == Requirements(env):
            return
        attested = verified_runs(self.artifacts, record.digest)
        facts = artifact_facts(self.store, service, record, requirements, attested)
        unmet = unmet_requirements(requirements, facts)
        if not unmet:
            return
        missing = [e for e in requirements.environments if e not in facts.succeeded_in]
        hint = (
            f"deploy it to {missing[0]} first: conveyor deploy {service} --env {missing[0]} "
            f"--artifact {record.digest}"
            if missing
            else "run the pipeline that builds it (`conveyor run`) from a clean checkout of an "
            f"allowed branch; its gate results are attested on the artifact (see `requires:` "
            f"of {env} in conveyor.yaml)"
        )
        if attested.rejected:
            unmet.append(
                f"({attested.rejected} attestation line(s) of {record.short} failed "
                "verification and were ignored)"
            )
        self.store.append_events(
            [
                NewEvent(
                    "release.refused",
                    {"artifact": record.digest, "unmet": unmet, "hint": hint},
                    service=service,
                    env=env,
                )
            ],
            actor=actor,
        )
        raise Refused(
            f"{service} {record.short} may not be deployed to {env}: " + "; ".join(unmet),
            hint=hint,
        )

    def rollback_target(self, service: str, env: str, to: int | None) -> ReleaseRecord:
        """The release a manual rollback returns to: `--to N`, or the one before the current."""
        if to is not None:
            target = self.store.release_by_revision(service, env, to)
            if target.phase != "succeeded":
                raise NotFound(
                    f"r{to} of {service} in {env} never succeeded ({target.phase}); "
                    "only a release that once ran well is a safe place to return to",
                    hint=f"pick one from `conveyor history {service} --env {env}`",
                )
            return target
        current = self.store.current_release(service, env)
        if current is None:
            raise NotFound(
                f"{service} has no successful release in {env} to roll back from",
                hint=f"deploy first: `conveyor deploy {service} --env {env} --build`",
            )
        for release in self.store.releases(service, env, limit=200):
            if (
                release.revision < current.revision
                and release.phase == "succeeded"
                and release.template != current.template
            ):
                return release
        raise NotFound(
            f"there is no earlier successful release of {service} in {env} to return to",
            hint=f"see `conveyor history {service} --env {env}`",
        )

    def rollback(self, service: str, env: str, to: int | None, *, actor: str) -> ReleaseRecord:
        target = self.rollback_target(service, env, to)
        return self.deploy(
            service,
            env,
            target.artifact_digest,
            actor=actor,
            reason=f"rollback to r{target.revision}",
            rollback_of=target.revision,
            base_config=target.config,
            instance_template=target.spec["instance"],
        )


def _current(release: ReleaseRecord | None) -> Current | None:
    if release is None:
        return None
    return Current(release.revision, release.template, release.instances, release.phase)


def _diff(before: Mapping[str, str], after: Mapping[str, str]) -> dict[str, list[str]]:
    """Config keys added, removed and changed (names only: values may be sensitive)."""
    return {
        "added": sorted(set(after) - set(before)),
        "removed": sorted(set(before) - set(after)),
        "changed": sorted(k for k in set(before) & set(after) if before[k] != after[k]),
    }
