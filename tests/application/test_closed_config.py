"""Config cannot take over the process, and secrets stay where they belong (the real stack).

- a deploy that sets a loader/interpreter/shell variable is refused, naming the variable
  and the fix, and the refusal is on the ledger; an environment's ``allow_set`` opens one
  name; a release stored with such a value still rolls back after the allowance is gone;
- a config value that is a secret reference reaches the instance as its value and every
  stored or shown place as its reference; the secret's value changes nothing about the
  release's identity; no file under the project holds any form of it; files are private;
- a secret that cannot be read fails the launch, which rolls the release back with the
  reason on the ledger and leaves no instance record behind.
"""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path

import httpx
import pytest

from conveyor.application import Caller
from conveyor.application.queries import release_json
from conveyor.core.model import SecretRef
from conveyor.errors import AlreadyDeployed, Refused, UsageError

from ..controller.harness import Stack, run, stack
from ..secret_forms import files_holding

pytestmark = pytest.mark.integration

SECRET = "hunter2-Sup3r/S3cret+ü~"
VARIABLE = "CONVEYOR_TEST_GREETING_SECRET"


def edit(s: Stack, old: str, new: str) -> None:
    config = s.root / "conveyor.yaml"
    text = config.read_text()
    assert old in text, old
    config.write_text(text.replace(old, new, 1))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def refused_events(s: Stack) -> list[dict[str, object]]:
    return [dict(e.details) for e in s.store.events() if e.kind == "release.refused"]


def test_protected_overrides_are_refused_unless_allowed_and_old_ones_roll_back(
    tmp_path: Path, database_url: str
) -> None:
    async def scenario() -> None:
        async with stack(tmp_path, database_url, instances=1) as s:
            v1 = await s.build("v1")
            with pytest.raises(Refused) as refused:
                await s.deploy("dev", v1, {"LD_PRELOAD": "/tmp/evil.so", "GREETING": "hi"})
            assert "config LD_PRELOAD cannot be set with a deploy of catalog to dev" in (
                refused.value.message
            )
            assert "dynamic loader" in refused.value.message
            assert "environments.dev.allow_set: [LD_PRELOAD]" in (refused.value.hint or "")
            assert refused_events(s)[-1]["overrides_refused"] == ["LD_PRELOAD"]
            with pytest.raises(Refused, match="config Path cannot be set"):
                await s.deploy("dev", v1, {"Path": "/tmp/bin"})
            with pytest.raises(UsageError, match="'A=B' is not a valid"):
                await s.deploy("dev", v1, {"A=B": "x"})
            assert s.store.releases("catalog", "dev", limit=5) == []

            # An administrator opens one name for one environment.
            edit(s, "  dev:\n", "  dev:\n    allow_set: [PYTHONPATH]\n")
            with pytest.raises(Refused, match="PYTHONSTARTUP"):
                await s.deploy("dev", v1, {"PYTHONSTARTUP": "/tmp/x.py"})
            r1 = await s.wait(await s.deploy("dev", v1, {"PYTHONPATH": "/opt/shared"}))
            assert r1.phase == "succeeded" and r1.config["PYTHONPATH"] == "/opt/shared"
            r2 = await s.wait(await s.deploy("dev", await s.build("v2")))
            assert r2.phase == "succeeded"

            # The allowance is withdrawn; the way back to r1 stays open.
            edit(s, "    allow_set: [PYTHONPATH]\n", "")
            back = await s.wait(await s.app.rollback(Caller("test"), "catalog", "dev", to=1))
            assert back.phase == "succeeded" and back.config["PYTHONPATH"] == "/opt/shared"

    run(scenario())


def test_a_secret_reaches_its_instance_and_only_its_reference_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(VARIABLE, SECRET)
    database = (tmp_path / ".conveyor" / "state.db").resolve()

    async def scenario() -> None:
        async with stack(tmp_path, f"sqlite:///{database}", instances=1) as s:
            edit(
                s,
                "config: {GREETING: hello}",
                f"config: {{GREETING: {{secret: {{env: {VARIABLE}}}}}, LEVEL: info}}",
            )
            v1 = await s.build("v1")
            release = await s.wait(await s.deploy("staging", v1))
            assert release.phase == "succeeded", release.status
            async with httpx.AsyncClient() as client:
                answer = await client.get(f"http://127.0.0.1:{s.port('staging')}/")
            assert answer.json()["greeting"] == SECRET  # the instance has the value

            ref = SecretRef("env", VARIABLE)
            assert release.plan.secrets == {"GREETING": ref}
            assert "GREETING" not in release.config
            shown = release_json(release)
            assert shown["plan"]["secrets"] == {"GREETING": {"env": VARIABLE}}
            created = next(
                e for e in s.store.events(release_id=release.id) if e.kind == "release.created"
            )
            assert created.details["secrets"] == {"GREETING": {"env": VARIABLE}}
            assert "GREETING" in created.details["config_changes"]["added"]

            # A new value behind the same reference is not a new release ...
            monkeypatch.setenv(VARIABLE, SECRET + "-rotated")
            with pytest.raises(AlreadyDeployed):
                await s.deploy("staging", v1)
            # ... pointing the key at another secret is.
            monkeypatch.setenv(VARIABLE + "_2", SECRET)
            edit(s, f"env: {VARIABLE}}}", f"env: {VARIABLE}_2}}")
            second = await s.wait(await s.deploy("staging", v1))
            assert second.config_version != release.config_version
            assert created.details["config_changes"] is not None
            changed = next(
                e for e in s.store.events(release_id=second.id) if e.kind == "release.created"
            )
            assert changed.details["config_changes"]["changed"] == ["GREETING"]

            state = tmp_path / ".conveyor"
            assert files_holding(tmp_path, SECRET) == {}
            # Everything Conveyor wrote is its owner's alone; unpacked trees are read-only.
            assert mode(state) == 0o700
            assert mode(database) == 0o600
            records = list((state / "runtime" / "instances").glob("*.json"))
            logs = list((state / "runtime" / "logs").rglob("*.log"))
            assert records and logs
            for path in [*records, *logs]:
                assert mode(path) == 0o600, path
            assert mode(state / "runtime" / "logs") == 0o700
            for build_log in (state / "builds").glob("*.log"):
                assert mode(build_log) == 0o600, build_log
            [tree] = [p for p in (state / "unpacked").iterdir() if p.is_dir() and p.name[0] != "."]
            assert mode(tree) == 0o555
            assert all(mode(p) & 0o222 == 0 for p in tree.rglob("*"))

    run(scenario())


def test_a_secret_that_cannot_be_read_fails_the_launch_and_rolls_back(
    tmp_path: Path, database_url: str
) -> None:
    async def scenario() -> None:
        async with stack(tmp_path, database_url, instances=1) as s:
            r1 = await s.wait(await s.deploy("staging", await s.build("v1")))
            assert r1.phase == "succeeded"
            edit(
                s,
                "config: {GREETING: hello}",
                "config: {GREETING: {secret: {env: CONVEYOR_TEST_NEVER_SET}}}",
            )
            r2 = await s.wait(await s.deploy("staging", await s.build("v2")))
            assert r2.phase == "rolled_back", r2.status
            assert r2.status.abort is not None and r2.status.abort.reason == "launch-failed"
            assert "$CONVEYOR_TEST_NEVER_SET" in r2.status.abort.message
            events = {e.kind: dict(e.details) for e in s.store.events(release_id=r2.id)}
            assert "$CONVEYOR_TEST_NEVER_SET" in str(events["instances.started"]["launch_failed"])
            assert events["release.aborted"]["reason"] == "launch-failed"
            # Nothing of the instance that never started is left to adopt.
            records = s.root / ".conveyor" / "runtime" / "instances"
            stored = [json.loads(p.read_text())["spec"] for p in records.glob("*.json")]
            assert [spec["revision"] for spec in stored] == [r1.revision]
            assert [i.revision for i in s.instances("staging")] == [r1.revision]
            await asyncio.sleep(0)

    run(scenario())
