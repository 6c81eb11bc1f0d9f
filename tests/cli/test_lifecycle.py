"""The whole life of a project through the real `conveyor` command and a real server.

One story runs once per module (a server start and six rollouts cost ~35 s, too much to
repeat per test): up, a second up, a second server, deploy with --build, status, a second
build, a release that breaks under load and rolls back on its own, history, a manual
rollback to r1, logs, events, unknown names, down; beside it a blue-green release without
auto_promote (production) and one with `max_restarts: 1` (dev). The fixture
only *runs* the story and records what each command printed and what was seen on the side
(the stable address, the artifact store, leftover processes); each test then asserts one
behaviour on that record. The fixture always ends with `conveyor down`, so a failing step
cannot leak a server."""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor.cli.demo import LoadThread
from tests.artifacts.gitrepo import commit_all, init_repo
from tests.controller.harness import write_project

from .support import Result, assert_clean_error, conveyor, processes_of

pytestmark = pytest.mark.integration

SERVICE = ("catalog", "--env", "staging")


@dataclass
class Story:
    root: Path
    project: str
    runs: dict[str, Result] = field(default_factory=dict)
    seen: dict[str, Any] = field(default_factory=dict)

    def run(self, key: str, *args: str) -> Result:
        self.runs[key] = conveyor(*args, root=self.root)
        return self.runs[key]

    def __getitem__(self, key: str) -> Result:
        if key not in self.runs:
            pytest.fail(f"the story stopped before `{key}`; ran: {list(self.runs)}")
        return self.runs[key]


def _server_pid(root: Path) -> int | None:
    try:
        return int(json.loads((root / ".conveyor" / "server.json").read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return None


def _get(url: str) -> tuple[int, Any]:
    try:
        response = httpx.get(url, timeout=5)
    except httpx.HTTPError as exc:
        return -1, str(exc)
    return response.status_code, response.json()


def _artifact_files(root: Path) -> list[str]:
    return sorted(p.name for p in (root / ".conveyor" / "artifacts").rglob("*.tar.gz"))


def _tell(story: Story) -> None:
    root = story.root
    up = story.run("up", "up", "--json")
    story.seen["pid"] = _server_pid(root)
    story.run("up-again", "up")
    story.seen["pid-again"] = _server_pid(root)
    story.run("second-server", "server")
    if up.code != 0:
        return

    story.run("deploy-v1", "deploy", *SERVICE, "--build", "--wait")
    story.run("status", "status")
    rows = story.run("status-json", "status", "--json").json()
    address = rows[0]["address"] if rows else ""
    story.seen["address"] = address
    story.seen["answer"] = _get(address + "/")
    # production is blue-green with auto_promote: false; it runs beside the staging story.
    digest = rows[0]["artifact"] if rows else ""
    story.run("deploy-production", "deploy", "catalog", "--env", "production", "--artifact", digest)

    (root / "services" / "catalog" / "VERSION").write_text("v2\n")
    commit_all(root, "v2")
    story.run("deploy-v2", "deploy", *SERVICE, "--build", "--wait", "--json")

    load = LoadThread(int(address.rsplit(":", 1)[1]), rate=60)
    load.start()
    try:
        story.run("deploy-fault", "deploy", *SERVICE, "--set", "FAULT_ERROR_RATE=0.6", "--wait")
    finally:
        story.seen["load"] = load.stop()
    story.seen["answer-after-fault"] = _get(address + "/")

    story.run("history", "history", *SERVICE)
    releases = story.run("history-json", "history", *SERVICE, "--json").json()
    r1 = next(r for r in releases if r["revision"] == 1)
    story.seen["artifacts-before-rollback"] = _artifact_files(root)
    story.run("rollback", "rollback", *SERVICE, "--to", "1", "--wait", "--json")
    story.seen["artifacts-after-rollback"] = _artifact_files(root)
    story.run("status-after-rollback", "status", "--env", "staging", "--json")
    story.seen["answer-after-rollback"] = _get(address + "/")

    story.run("logs", "logs", *SERVICE)
    story.run("logs-json", "logs", *SERVICE, "--json")
    story.run("events", "events", "--service", "catalog")
    story.run("events-json", "events", "--json")

    story.run("history-production", "history", "catalog", "--env", "production", "--json")
    digest = r1["artifact_digest"]
    story.run("unknown-service", "deploy", "catalg", "--env", "staging", "--artifact", digest)
    story.run("unknown-env", "deploy", "catalog", "--env", "stagin", "--artifact", digest, "--json")
    story.run("history-unknown-service", "history", "catalg", "--env", "staging", "--json")
    # dev sets `rollback: {max_restarts: 1}` (see the fixture).
    story.run("deploy-dev", "deploy", "catalog", "--env", "dev", "--artifact", digest, "--wait")
    story.run("history-dev", "history", "catalog", "--env", "dev", "--json")


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Story]:
    root = tmp_path_factory.mktemp("life")
    name = f"cli-life-{uuid.uuid4().hex[:8]}"
    config = write_project(
        root, instances=2, verification="1s", deadline="8s", scale_down_delay="1s", project=name
    )
    # production: blue-green without auto_promote; dev: the first crash is a crash loop.
    text = config.read_text()
    edited = text.replace(
        "{blue_green: {scale_down_delay: 1s}}",
        "{blue_green: {scale_down_delay: 1s, auto_promote: false}}",
    ).replace(
        "  dev:\n    strategy: recreate\n",
        "  dev:\n    strategy: recreate\n    rollback: {max_restarts: 1}\n",
    )
    assert edited.count("auto_promote: false") == edited.count("max_restarts: 1") == 1, edited
    config.write_text(edited)
    init_repo(root)
    story = Story(root, name)
    story.seen["commit-v1"] = commit_all(root, "v1")
    try:
        _tell(story)
    finally:
        story.run("down", "down", "--json")
        story.run("down-again", "down")
        deadline = time.monotonic() + 10
        while processes_of(root, name) and time.monotonic() < deadline:
            time.sleep(0.1)
        story.seen["leftovers"] = processes_of(root, name)
    yield story


# --- server lifecycle ----------------------------------------------------------------------


def test_up_is_idempotent(story: Story) -> None:
    url = story["up"].json()["url"]
    assert url.startswith("http://127.0.0.1:")
    again = story["up-again"]
    assert again.code == 0, again
    assert f"conveyor server at {url}" in again.stdout
    assert story.seen["pid"] is not None
    assert story.seen["pid-again"] == story.seen["pid"]


def test_a_second_server_is_a_conflict(story: Story) -> None:
    result = story["second-server"]
    assert_clean_error(result, 4)
    assert "a Conveyor server is already running for this project" in result.stderr
    assert "`conveyor down`" in result.stderr
    # ... and the running one did not notice: the commands after it all reached it.
    assert story["status-json"].code == 0, story["status-json"]


def test_down_stops_the_server_and_every_instance(story: Story) -> None:
    # The server leaves the data plane running when it stops; `down` then stops the router
    # process and the instances itself.
    stopped = story["down"].json()
    assert stopped["stopped_server"] == story.seen["pid"]
    assert [r.split()[0] for r in stopped["stopped_routers"]] == ["builtin"]
    assert stopped["stopped_leftover_instances"] >= 1
    again = story["down-again"]
    assert again.code == 0, again
    assert "no server was running" in again.stdout
    assert story.seen["leftovers"] == []
    assert not (story.root / ".conveyor" / "server.json").exists()


# --- releases --------------------------------------------------------------------------------


def test_deploy_build_wait_succeeds(story: Story) -> None:
    result = story["deploy-v1"]
    assert result.code == 0, result
    assert "built catalog sha256:" in result.stdout
    assert "catalog/staging r1 created" in result.stdout
    assert "rollout.started" in result.stdout
    assert "catalog/staging r1: succeeded" in result.stdout


def test_status_says_what_runs_where(story: Story) -> None:
    [row] = story["status-json"].json()
    releases = {r["revision"]: r for r in story["history-json"].json()}
    assert row["service"] == "catalog" and row["env"] == "staging"
    assert row["revision"] == 1
    assert row["artifact"] == releases[1]["artifact_digest"]
    assert row["config_version"] == releases[1]["config_version"]
    assert (row["ready"], row["desired"]) == (2, 2)
    assert row["phase"] == "succeeded"
    assert row["address"] == story.seen["address"]
    status, body = story.seen["answer"]
    assert status == 200, body
    assert body["greeting"] == "hello"
    assert body["instance"].startswith("catalog-staging-r1-")

    human = story["status"]
    assert human.code == 0, human
    for text in ("catalog", "staging", "r1", row["config_version"], row["address"], "2/2"):
        assert text in human.stdout, (text, human)


def test_version_is_the_commit_the_artifact_was_built_from(story: Story) -> None:
    [row] = story["status-json"].json()
    assert row["version"] == story.seen["commit-v1"][:12]
    [after] = story["status-after-rollback"].json()
    assert after["version"] == story.seen["commit-v1"][:12]


def test_a_release_that_fails_under_load_rolls_back_with_exit_10(story: Story) -> None:
    result = story["deploy-fault"]
    assert result.code == 10, result
    assert "catalog/staging r3: rolled_back" in result.stdout
    assert "release.aborted" in result.stdout or "release.rolled_back" in result.stdout
    releases = {r["revision"]: r for r in story["history-json"].json()}
    abort = releases[3]["status"]["abort"]
    assert abort["reason"] == "error-rate", abort
    assert abort["evidence"]["error_rate"] > 0.05
    assert story.seen["load"].sent > 0
    status, body = story.seen["answer-after-fault"]
    assert status == 200, body
    assert body["instance"].startswith("catalog-staging-r2-")


def test_history_lists_releases_newest_first_with_phases(story: Story) -> None:
    releases = story["history-json"].json()
    assert [(r["revision"], r["phase"]) for r in releases] == [
        (3, "rolled_back"),
        (2, "succeeded"),
        (1, "succeeded"),
    ]
    by_rev = {r["revision"]: r for r in releases}
    assert by_rev[2]["artifact_digest"] != by_rev[1]["artifact_digest"]  # v2 was rebuilt
    assert by_rev[3]["artifact_digest"] == by_rev[2]["artifact_digest"]  # config-only release
    assert by_rev[3]["config"]["FAULT_ERROR_RATE"] == "0.6"
    assert "FAULT_ERROR_RATE" not in by_rev[2]["config"]
    human = story["history"]
    assert human.code == 0, human
    assert "rolled_back" in human.stdout and "error-rate" in human.stdout


def test_rollback_redeploys_the_bytes_of_r1_without_building(story: Story) -> None:
    r1 = next(r for r in story["history-json"].json() if r["revision"] == 1)
    result = story["rollback"]
    assert result.code == 0, result
    release = result.json()
    assert release["revision"] == 4
    assert release["rollback_of"] == 1
    assert release["reason"] == "rollback to r1"
    assert release["phase"] == "succeeded"
    assert release["artifact_digest"] == r1["artifact_digest"]
    assert release["config"] == r1["config"]
    assert story.seen["artifacts-after-rollback"] == story.seen["artifacts-before-rollback"]
    assert len(story.seen["artifacts-after-rollback"]) == 2
    builds = [e for e in story["events-json"].json() if e["kind"] == "artifact.built"]
    assert len(builds) == 2

    [row] = story["status-after-rollback"].json()
    assert (row["revision"], row["artifact"]) == (4, r1["artifact_digest"])
    status, body = story.seen["answer-after-rollback"]
    assert status == 200, body
    assert body["instance"].startswith("catalog-staging-r4-")


def test_logs_show_instance_start_markers(story: Story) -> None:
    human = story["logs"]
    assert human.code == 0, human
    assert "--- started pid" in human.stdout
    assert "catalog-staging-r4-" in human.stdout
    instances = story["logs-json"].json()["instances"]
    assert instances
    r4 = [lines for name, lines in instances.items() if name.startswith("catalog-staging-r4-")]
    assert len(r4) == 2
    assert all(lines[0].startswith("--- started pid ") for lines in r4)


def test_events_are_a_hash_chained_ledger(story: Story) -> None:
    events = story["events-json"].json()
    assert isinstance(events, list) and events
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    for before, after in itertools.pairwise(events):
        assert after["prev_hash"] == before["hash"]
    assert all(len(e["hash"]) >= 32 for e in events)
    kinds = {e["kind"] for e in events}
    assert {"release.created", "release.succeeded", "release.rolled_back"} <= kinds
    human = story["events"]
    assert human.code == 0, human
    assert "release.rolled_back" in human.stdout and "catalog/staging" in human.stdout


def test_each_release_is_created_once_on_the_ledger(story: Story) -> None:
    """`deploy --wait` prints the ledger; a release announced twice reads as two releases."""
    events = story["events-json"].json()
    created = [e["release_id"] for e in events if e["kind"] == "release.created"]
    assert len(created) == len(set(created)) >= 4
    assert story["deploy-v1"].stdout.count("release.created") == 1


def test_unknown_names_are_not_found_with_a_suggestion(story: Story) -> None:
    service = story["unknown-service"]
    assert_clean_error(service, 3)
    assert "unknown service 'catalg'" in service.stderr
    assert "did you mean 'catalog'?" in service.stderr
    env = story["unknown-env"]
    assert_clean_error(env, 3)
    body = env.json()
    assert body["error"] == "NotFound"
    assert "unknown environment 'stagin'" in body["message"]
    assert "did you mean 'staging'?" in body["hint"]


def test_history_of_an_unknown_service_is_not_found(story: Story) -> None:
    assert_clean_error(story["history-unknown-service"], 3)


def test_max_restarts_one_still_deploys_a_healthy_version(story: Story) -> None:
    [release] = story["history-dev"].json()
    assert release["status"].get("abort") is None, release["status"]["abort"]
    assert story["deploy-dev"].code == 0, story["deploy-dev"]


def test_every_json_output_parses(story: Story) -> None:
    keys = [k for k, r in story.runs.items() if "--json" in r.args]
    assert len(keys) >= 10, keys
    for key in keys:
        story[key].json()


def test_blue_green_without_auto_promote_waits_for_promote(story: Story) -> None:
    assert story["deploy-production"].code == 0, story["deploy-production"]
    [release] = story["history-production"].json()
    assert release["phase"] != "succeeded", release["status"]
