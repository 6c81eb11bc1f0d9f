"""Dashboard test helpers: a store seeded with many services, and a browser-like client.

``seed`` writes releases straight into a store (no controller, no instances), in every
phase the overview draws differently, with drift between environments; the fast tests and
bench/dashboard_overview.py use it. ``Browser`` speaks to the dashboard as a browser
without JavaScript does: cookies, forms, redirects.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from conveyor.core.plan import InstanceTemplate, ReleasePlan, StableRef
from conveyor.core.state import Phase, RolloutStatus, SetWeightStep, StrategySpec
from conveyor.store import ArtifactRecord, NewRelease, Store

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def config_text(services: int, envs: tuple[str, ...] = ("dev", "staging", "production")) -> str:
    """A conveyor.yaml naming ``services`` services (``svc-000`` ...) in ``envs``."""
    lines = ["project: many", "services:"]
    for i in range(services):
        lines.append(f"  svc-{i:03d}:")
        lines.append('    build: {run: "true", outputs: [app]}')
        lines.append('    run: "true"')
    lines.append("environments:")
    for env in envs:
        lines.append(f"  {env}:")
    lines += [
        "pipeline:",
        "  jobs:",
        '    test: {run: "true"}',
        '    lint: {run: "true"}',
        "    build: {needs: [test, lint], build: svc-000}",
        f"    deploy-first: {{needs: [build], deploy: {{env: {envs[0]}}}}}",
    ]
    return "\n".join(lines) + "\n"


def _commit(service: int, generation: int) -> str:
    return hashlib.sha1(f"{service}-{generation}".encode()).hexdigest()


def seed(
    store: Store,
    services: int,
    envs: tuple[str, ...] = ("dev", "staging", "production"),
) -> dict[str, int]:
    """Releases for every service in every environment; returns how many of each phase.

    Every 10th service has a newer commit in its first environments than in the last
    (drift); every 7th runs a canary in its middle environment; every 13th rolled back in
    the last; every 17th (from svc-005) waits for approval in the last.
    """
    counts: dict[str, int] = {}
    for i in range(services):
        name = f"svc-{i:03d}"
        digests = {}
        for generation in (1, 2):
            digest = "sha256:" + hashlib.sha256(f"{name}-{generation}".encode()).hexdigest()
            store.record_artifact(
                ArtifactRecord(
                    digest=digest,
                    service=name,
                    commit=_commit(i, generation),
                    branch="main",
                    dirty=False,
                    created_at=1_700_000_000.0,
                    size=100,
                    files=1,
                    build_command="true",
                    outputs=("app",),
                    metadata={},
                ),
                actor="seed",
            )
            digests[generation] = digest
        for position, env in enumerate(envs):
            last = position == len(envs) - 1
            newest = 1 if (i % 10 == 0 and last) else 2
            first = store.create_release(
                NewRelease(
                    _plan(name, env, digests[newest], _commit(i, newest)), _status(Phase.SUCCEEDED)
                ),
                actor="seed",
            )
            phase = Phase.SUCCEEDED
            if i % 7 == 0 and position == 1:
                phase = Phase.PROGRESSING
            elif i % 13 == 0 and last:
                phase = Phase.ROLLED_BACK
            elif i % 17 == 5 and last:
                phase = Phase.PENDING_APPROVAL
            if phase is not Phase.SUCCEEDED:
                plan = _plan(
                    name,
                    env,
                    digests[1],
                    _commit(i, 1),
                    canary=phase is Phase.PROGRESSING,
                    stable=StableRef(first.id, first.revision, first.template, 2),
                )
                status = _status(phase)
                if phase is Phase.PROGRESSING:
                    weights = {plan.version: 20, first.template: 80}
                    status = status.evolve(weights=weights, step_index=1)
                store.create_release(NewRelease(plan, status), actor="seed")
            counts[phase.value] = counts.get(phase.value, 0) + 1
    return counts


def _plan(
    service: str,
    env: str,
    digest: str,
    commit: str,
    *,
    canary: bool = False,
    stable: StableRef | None = None,
) -> ReleasePlan:
    strategy = (
        StrategySpec(kind="canary", steps=(SetWeightStep(10), SetWeightStep(20), SetWeightStep(50)))
        if canary
        else StrategySpec(kind="rolling")
    )
    return ReleasePlan(
        service=service,
        env=env,
        artifact=digest,
        config={"GREETING": "hello"},
        instance=InstanceTemplate(command="true"),
        desired=2,
        strategy=strategy,
        commit=commit,
        stable=stable,
    )


def _status(phase: Phase) -> RolloutStatus:
    return RolloutStatus(phase=phase, message=f"seeded as {phase.value}")


@dataclass
class Browser:
    """A cookie-keeping HTTP client that signs in and sends forms like a page would."""

    base: str
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(base_url=self.base, timeout=30, follow_redirects=False)

    def close(self) -> None:
        self.client.close()

    def sign_in(self, token: str) -> httpx.Response:
        form = self.client.get("/ui/login")
        nonce = CSRF.search(form.text)
        assert nonce is not None, form.text
        return self.client.post(
            "/ui/login", data={"csrf": nonce.group(1), "token": token, "next": "/ui/"}
        )

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.get(path, **kwargs)

    def csrf(self, path: str = "/ui/") -> str:
        found = CSRF.search(self.get(path).text)
        assert found is not None
        return found.group(1)

    def post(self, path: str, data: dict[str, str], **kwargs: Any) -> httpx.Response:
        return self.client.post(path, data=data, **kwargs)


def admin_token(root: Path) -> str:
    return (root / ".conveyor" / "admin.token").read_text().strip()
