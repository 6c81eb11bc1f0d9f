"""Secrets of an instance: read when it starts, given to it, masked in everything written.

A real instance prints its secret in every form a tool would (base64, hex, URL-encoded,
JSON-escaped, reversed, wrapped across lines, cut between two writes, inside a Basic auth
header); afterwards no file under the state dir holds any of those forms, and the instance
still received the real value.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from conveyor.core.model import SecretRef
from conveyor.runtime.local import LocalTarget, procfs, tail

from ..secret_forms import SECRET, VARIABLE, files_holding, printer_argv
from .conftest import catalog_spec, eventually

pytestmark = pytest.mark.integration


def log_text(state_dir: Path, instance_id: str) -> str:
    return "\n".join(tail(state_dir / "logs" / "catalog" / "dev" / f"{instance_id}.log", 200))


@pytest.mark.parametrize("source", ["env", "file"])
def test_an_instance_gets_its_secret_and_its_log_never_shows_it(
    state_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    if source == "env":
        monkeypatch.setenv(VARIABLE, SECRET)
        ref = SecretRef("env", VARIABLE)
    else:
        secret_file = tmp_path / "db-password"
        secret_file.write_text(SECRET + "\n")  # the final newline is not part of the value
        ref = SecretRef("file", str(secret_file))

    async def main() -> None:
        target = LocalTarget(state_dir)
        spec = catalog_spec(
            "c1",
            command=tuple(printer_argv("DB_PASSWORD", linger=60)),
            readiness=None,
            secrets={"DB_PASSWORD": ref},
        )
        launched = await target.launch(spec)
        await eventually(
            lambda: "done printing" in log_text(state_dir, "c1"), what="the instance printed"
        )
        # The leader is the relay; the service below it has the real value.
        assert launched.pid is not None
        members = procfs.group_members(launched.pid)
        service = [p for p in members if p != launched.pid]
        assert service, members
        env = procfs.read_environ(service[0])
        assert env is not None and env["DB_PASSWORD"] == SECRET
        assert "CONVEYOR_MASK_VARS" not in env

        text = log_text(state_dir, "c1")
        assert text.count("printed: ") == 15
        assert "***" in text
        assert files_holding(state_dir) == {}
        await target.stop("c1")
        assert "stopped: killed by SIGTERM" in log_text(state_dir, "c1")
        assert files_holding(state_dir) == {}
        await target.close(stop_instances=True)

    asyncio.run(main())


def test_an_instance_without_secrets_writes_its_log_directly(state_dir: Path) -> None:
    """No relay in between when there is nothing to mask: the leader is the service."""

    async def main() -> None:
        target = LocalTarget(state_dir)
        launched = await target.launch(catalog_spec("c1", command=("sleep", "30"), readiness=None))
        assert launched.pid is not None
        assert procfs.group_members(launched.pid) == [launched.pid]
        await target.close(stop_instances=True)

    asyncio.run(main())


def test_a_relayed_instance_exits_like_its_service(state_dir: Path) -> None:
    async def main() -> None:
        target = LocalTarget(state_dir)
        await target.launch(
            catalog_spec(
                "c1",
                command=("sh", "-c", "echo $DB_PASSWORD; exit 3"),
                readiness=None,
                secrets={"DB_PASSWORD": SecretRef("env", "CONVEYOR_TEST_SECRET_EXIT")},
            )
        )
        await eventually(
            lambda: target.observe("catalog", "dev")[0].last_exit_code == 3, what="exit 3"
        )
        text = log_text(state_dir, "c1")
        assert "exited with code 3" in text and "hunter22" not in text and "***" in text
        await target.close(stop_instances=True)

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CONVEYOR_TEST_SECRET_EXIT", "hunter22")
        asyncio.run(main())


def test_the_test_secret_exercises_every_encoding() -> None:
    from ..secret_forms import forms

    found = forms()
    assert len(set(found.values())) == len(found), "each form must differ from the others"
    assert "+" in found["base64"] or "/" in found["base64"]


def test_a_restarted_server_adopts_a_relayed_instance_and_stops_it_whole(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(VARIABLE, SECRET)

    async def main() -> None:
        first = LocalTarget(state_dir)
        spec = catalog_spec("c1", secrets={"GREETING": SecretRef("env", VARIABLE)})
        launched = await first.launch(spec)
        await eventually(lambda: first.all_instances()[0].ready, what="ready")
        await first.close(stop_instances=False)

        second = LocalTarget(state_dir)
        await second.start()
        [adopted] = second.all_instances()
        assert adopted.pid == launched.pid  # the relay, still leading its group
        await eventually(lambda: second.all_instances()[0].ready, what="ready again")
        assert launched.pid is not None
        group = procfs.group_members(launched.pid)
        assert len(group) >= 2  # the relay, the service (and its `sh -c`)
        await second.stop("c1")
        assert procfs.group_members(launched.pid) == []
        assert files_holding(state_dir) == {}
        await second.close(stop_instances=True)

    asyncio.run(main())
