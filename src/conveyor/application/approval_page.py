"""The approval page: everything a reviewer needs to say yes or no, on one page.

"Six manual gates become one approval that shows the evidence": the page gathers, for one
release waiting for people,

* the artifact, and that its bytes and signature verify **now**;
* the gate results from its signed attestations, and the environment's requirements
  evaluated now;
* what changes against what runs there: the commits between the two versions with their
  authors, the files changed, the config keys added, changed and removed (secret values are
  never shown: a secret appears as its reference);
* the rollout plan: strategy, steps, analysis, triggers;
* the rollback plan: the exact release users return to, whether its artifact is still
  there and verifies, and which triggers fire on their own;
* the schema migrations it runs: each one's class (expand or contract, and why), its lint
  findings and its undo.

The page is JSON; its ``page_hash`` (sha256 of the canonical text) is what a vote records,
so the ledger proves what the voter was shown. Git is asked for commits and files only when
the project is a git repository on the server's host; otherwise the page says so.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from conveyor.application.evidence import check_integrity, requirements_now
from conveyor.application.migrations import migrations_report
from conveyor.artifacts.attestations import Attested, verified_runs
from conveyor.artifacts.signing import Keyring
from conveyor.artifacts.store import ArtifactStore
from conveyor.config.loader import LoadedProject
from conveyor.core.plan import ReleasePlan
from conveyor.core.state import describe_step
from conveyor.errors import ConveyorError, NotFound
from conveyor.store.records import ReleaseRecord
from conveyor.store.repository import Store

MAX_COMMITS = 200
MAX_FILES = 500
_GIT_TIMEOUT = 10.0


def approval_page(
    release: ReleaseRecord,
    *,
    approval: Mapping[str, Any],
    store: Store,
    artifacts: ArtifactStore,
    keyring: Keyring,
    project: LoadedProject | ConveyorError,
    root: Path,
) -> dict[str, Any]:
    """The page for ``release``; checks that fail are shown on it, never raised."""
    artifact = store.get_artifact(release.artifact_digest)
    integrity = check_integrity(
        artifacts, keyring, artifact.digest, release.service, artifact.created_at
    )
    try:
        attested = verified_runs(
            artifacts,
            artifact.digest,
            keyring,
            service=release.service,
            recorded_at=artifact.created_at,
        )
    except ConveyorError:
        attested = Attested((), 0)
    requirements = requirements_now(project, store, release, artifact, attested)
    running = _running(store, release)
    page: dict[str, Any] = {
        "release": {
            "id": release.id,
            "name": release.name,
            "service": release.service,
            "env": release.env,
            "revision": release.revision,
            "asked_by": release.actor,
            "asked_at": release.created_at,
            "reason": release.reason,
            "phase": release.phase.value,
            "content": release.plan.content_hash,
        },
        "approval": dict(approval),
        "artifact": {
            "digest": artifact.digest,
            "commit": artifact.commit,
            "branch": artifact.branch,
            "dirty": artifact.dirty,
            "built_for": list(artifact.services),
            "bytes_ok": integrity.bytes_problem is None,
            "signature_ok": integrity.signed is not None,
            "signed_by": integrity.signed.key if integrity.signed else None,
            "problems": [p for p in (integrity.bytes_problem, integrity.signature_problem) if p],
        },
        "gates": attested.gates(),
        "requirements": {
            "unmet": list(requirements.unmet),
            "problem": requirements.problem,
        },
        "changes": _changes(root, release, running),
        "rollout": _rollout(release.plan),
        "rollback": _rollback(store, artifacts, keyring, release),
        "migrations": migrations_report(release.plan),
    }
    page["page_hash"] = page_hash(page)
    return page


def page_hash(page: Mapping[str, Any]) -> str:
    body = {k: v for k, v in page.items() if k != "page_hash"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _running(store: Store, release: ReleaseRecord) -> ReleaseRecord | None:
    stable = release.plan.stable
    if stable is None:
        return None
    try:
        return store.get_release(stable.release_id)
    except NotFound:
        return None


def _changes(root: Path, release: ReleaseRecord, running: ReleaseRecord | None) -> dict[str, Any]:
    new, old = release.plan, running.plan if running else None
    config = _config_diff(old, new)
    out: dict[str, Any] = {
        "running": None
        if running is None
        else {
            "revision": running.revision,
            "artifact": running.artifact_digest,
            "commit": running.plan.commit,
        },
        "config": config,
        "same_artifact": old is not None and old.artifact == new.artifact,
    }
    if old is None or not old.commit or not new.commit:
        out["commits"] = None
        out["files"] = None
        out["git"] = "no earlier version with a recorded commit to compare with"
        return out
    commits = _git(
        root,
        "log",
        f"--max-count={MAX_COMMITS}",
        "--format=%H%x1f%an <%ae>%x1f%s",
        f"{old.commit}..{new.commit}",
    )
    files = _git(root, "diff", "--numstat", old.commit, new.commit)
    if commits is None or files is None:
        out["commits"] = None
        out["files"] = None
        out["git"] = f"git cannot compare {old.commit[:12]} and {new.commit[:12]} here"
        return out
    out["commits"] = [
        dict(zip(("sha", "author", "subject"), line.split("\x1f", 2), strict=False))
        for line in commits.splitlines()
        if line
    ]
    out["files"] = [
        {"path": path, "added": added, "removed": removed}
        for added, removed, path in (
            line.split("\t", 2) for line in files.splitlines()[:MAX_FILES] if line.count("\t") >= 2
        )
    ]
    return out


def _config_diff(old: ReleasePlan | None, new: ReleasePlan) -> dict[str, Any]:
    """Keys added, changed and removed; a secret shows as its reference, never a value."""
    before = old.config_shown() if old else {}
    after = new.config_shown()
    return {
        "added": {k: after[k] for k in sorted(set(after) - set(before))},
        "removed": sorted(set(before) - set(after)),
        "changed": {
            k: {"from": before[k], "to": after[k]}
            for k in sorted(set(before) & set(after))
            if before[k] != after[k]
        },
    }


def _rollout(plan: ReleasePlan) -> dict[str, Any]:
    strategy = plan.strategy
    return {
        "strategy": strategy.kind,
        "instances": plan.desired,
        "steps": [describe_step(s) for s in strategy.steps],
        "background_analysis": strategy.background_analysis,
        "analysis": {
            name: [
                {
                    "metric": m.name,
                    "provider": m.provider,
                    "success": m.success_condition,
                    "failure": m.failure_condition,
                }
                for m in template.metrics
            ]
            for name, template in plan.analysis.items()
        },
        "progress_deadline": plan.progress_deadline,
        "triggers": {
            "error_rate": plan.triggers.error_rate,
            "window": plan.triggers.window,
            "max_restarts": plan.triggers.max_restarts,
            "verification": plan.triggers.verification,
        },
    }


def _rollback(
    store: Store, artifacts: ArtifactStore, keyring: Keyring, release: ReleaseRecord
) -> dict[str, Any]:
    stable = release.plan.stable
    if stable is None:
        return {"to": None, "note": "a first release: a rollback stops it (nothing to return to)"}
    try:
        target = store.get_release(stable.release_id)
        artifact = store.get_artifact(target.artifact_digest)
    except NotFound as missing:
        return {"to": {"revision": stable.revision}, "problem": missing.message}
    integrity = check_integrity(
        artifacts, keyring, artifact.digest, target.service, artifact.created_at
    )
    return {
        "to": {
            "revision": target.revision,
            "artifact": target.artifact_digest,
            "commit": target.plan.commit,
            "instances": target.plan.desired,
        },
        "artifact_present": artifacts.exists(artifact.digest),
        "verifies": integrity.bytes_problem is None and integrity.signed is not None,
        "problems": [p for p in (integrity.bytes_problem, integrity.signature_problem) if p],
        "fires_on_its_own_when": [
            f"more than {release.plan.triggers.error_rate:.1%} of answers fail "
            f"(over {release.plan.triggers.window:g}s)",
            f"an instance crashes {release.plan.triggers.max_restarts} times",
            f"no progress for {release.plan.progress_deadline:g}s",
        ],
    }


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def commit_authors(root: Path, old: str | None, new: str | None) -> tuple[str, ...]:
    """``Name <email>`` of the commits between two versions (empty when git cannot tell)."""
    if not old or not new:
        return ()
    text = _git(root, "log", f"--max-count={MAX_COMMITS}", "--format=%an <%ae>", f"{old}..{new}")
    return tuple(dict.fromkeys(line for line in (text or "").splitlines() if line))
