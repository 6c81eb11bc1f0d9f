"""Commands that need a server but no rollout: build, keys, logs, evidence, and wrong names.

One real server (`conveyor up`) for the module: the story builds, reads keys and logs,
asks for evidence before any release, and makes the mistakes users make; each test then
asserts one behaviour on what the commands printed. Without a server these commands say
how to start one (test_offline.py).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from conveyor.artifacts.signing import Keyring
from conveyor.layout import Layout
from tests.artifacts.gitrepo import commit_all, init_repo
from tests.controller.harness import write_project

from .support import Result, assert_clean_error, cli_env, conveyor, processes_of

pytestmark = pytest.mark.integration


@dataclass
class Story:
    root: Path
    runs: dict[str, Result] = field(default_factory=dict)
    seen: dict[str, Any] = field(default_factory=dict)

    def run(self, key: str, *args: str, token: str | None = None) -> Result:
        env = cli_env(CONVEYOR_TOKEN=token) if token is not None else None
        self.runs[key] = conveyor(*args, root=self.root, env=env)
        return self.runs[key]

    def __getitem__(self, key: str) -> Result:
        if key not in self.runs:
            pytest.fail(f"the story stopped before `{key}`; ran: {list(self.runs)}")
        return self.runs[key]


def _artifacts(root: Path) -> list[str]:
    folder = root / ".conveyor" / "artifacts" / "sha256"
    return sorted(p.name for p in folder.glob("*.tar.gz")) if folder.exists() else []


def _tell(story: Story) -> None:
    root = story.root
    if story.run("up", "up", "--json").code != 0:
        return
    story.run("build", "build", "catalog", "--json")
    story.run("build-again", "build", "catalog", "--json")
    story.run("build-human", "build", "catalog")

    story.run("keys", "keys", "show", "--json")
    story.seen["key-on-disk"] = Keyring(Layout(root).server_keys).current()  # the server's own file
    story.run("keys-again", "keys", "show", "--json")
    story.run("keys-rotate", "keys", "rotate", "--json")
    story.run("keys-human", "keys", "show")

    story.run("logs", "logs", "catalog", "--env", "staging")
    story.run("logs-json", "logs", "catalog", "--env", "staging", "--json")

    story.run("evidence-release", "evidence", "catalog/staging")
    story.run("evidence-revision", "evidence", "catalog/staging@r2", "--json")
    story.run("evidence-latest", "evidence", "latest")
    story.run("evidence-neither", "evidence", "nope")

    story.run("build-catalg", "build", "catalg", "--json")
    story.run("logs-stagin", "logs", "catalog", "--env", "stagin", "--json")
    story.run("deploy-catalg", "deploy", "catalg", "--env", "staging", "--json")
    story.run("logs-markup", "logs", "[/x]", "--env", "staging")

    story.run("dashboard", "dashboard", "--json")
    story.run("whoami", "whoami", "--json")
    made = story.run("token", "tokens", "create", "ci-shop", "--role", "viewer", "--env", "staging")
    secret = made.stdout.strip().splitlines()[-1] if made.code == 0 else ""
    story.run("whoami-viewer", "whoami", token=secret)
    story.run("status-viewer", "status", "--json", token=secret)
    story.run("deploy-viewer", "deploy", "catalog", "--env", "staging", token=secret)
    story.run("tokens", "tokens", "list", "--json")
    story.run("tokens-human", "tokens", "list")
    ci = next((t["id"] for t in story["tokens"].json() if t["identity"] == "ci-shop"), "-")
    story.run("revoke", "tokens", "revoke", ci)
    story.run("status-revoked", "status", token=secret)
    story.run("status-unknown", "status", "--json", token="cvy_not-a-token")

    server = root / "services" / "catalog" / "app" / "server.py"
    server.write_text(server.read_text() + "\n# a change\n")
    story.run("build-dirty", "build", "catalog", "--json")
    story.seen["artifacts"] = _artifacts(root)


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Story]:
    root = tmp_path_factory.mktemp("served")
    name = f"cli-served-{uuid.uuid4().hex[:8]}"
    write_project(root, project=name)
    init_repo(root)
    story = Story(root)
    story.seen["head"] = commit_all(root, "v1")
    try:
        _tell(story)
    finally:
        story.run("down", "down")
        deadline = time.monotonic() + 10
        while processes_of(root, name) and time.monotonic() < deadline:
            time.sleep(0.1)
    yield story


def test_build_hands_a_reproducible_artifact_with_provenance_to_the_server(story: Story) -> None:
    first, second = story["build"], story["build-again"]
    assert first.code == 0, first
    assert second.code == 0, second
    built, again = first.json(), second.json()
    digest = built["artifact"]["digest"]
    assert digest.startswith("sha256:") and len(digest) == len("sha256:") + 64
    assert (built["reused"], again["reused"]) == (False, True)
    assert again["artifact"] == built["artifact"]  # the record of the first build
    assert built["artifact"]["commit"] == story.seen["head"]
    assert built["artifact"]["branch"] == "main"
    assert built["artifact"]["dirty"] is False
    assert "catalog" in built["artifact"]["services"]
    assert Path(built["log"]).is_file()

    human = story["build-human"]
    assert human.code == 0, human
    assert f"built catalog {digest} (unchanged, reused)" in human.stdout, human
    assert f"commit {story.seen['head']} on main" in human.stdout, human


def test_a_changed_tree_is_a_new_dirty_artifact(story: Story) -> None:
    first = story["build"].json()["artifact"]
    changed = story["build-dirty"]
    assert changed.code == 0, changed
    artifact = changed.json()["artifact"]
    assert artifact["digest"] != first["digest"]
    assert changed.json()["reused"] is False
    assert artifact["dirty"] is True and artifact["commit"] == story.seen["head"]
    assert len(story.seen["artifacts"]) == 2  # the server kept both archives


def test_keys_are_shown_and_rotated_by_the_server(story: Story) -> None:
    first = story["keys"].json()
    on_disk = story.seen["key-on-disk"]
    assert first["algorithm"] == "ed25519"
    assert (first["key"], first["public_key"]) == (on_disk.fingerprint, on_disk.public_pem)
    assert first["trusted"] == [first["key"]]
    assert story["keys-again"].json() == first  # not a new key
    rotated = story["keys-rotate"]
    assert rotated.code == 0, rotated
    second = rotated.json()
    assert second["previous"] == first["key"] and second["key"] != first["key"]
    assert second["trusted"] == [second["key"]]
    assert [k["key"] for k in second["retired"]] == [first["key"]]
    human = story["keys-human"]
    assert human.code == 0, human
    assert second["key"] in human.stdout and "BEGIN PUBLIC KEY" in human.stdout
    assert "trusted for verifying: 1 key(s)" in human.stdout
    assert "retired: 1 key(s)" in human.stdout


def test_logs_before_any_deploy(story: Story) -> None:
    human = story["logs"]
    assert human.code == 0, human
    assert "no logs yet for catalog in staging" in human.stdout
    assert story["logs-json"].json() == {"env": "staging", "instances": {}, "service": "catalog"}


def test_evidence_before_any_release_or_run_is_a_clean_error(story: Story) -> None:
    missing = story["evidence-release"]
    assert_clean_error(missing, 3)  # NotFound
    assert "catalog/staging has no release yet" in missing.output
    assert "SERVICE/ENV@r3" in missing.output

    revision = story["evidence-revision"]
    assert revision.code == 3, revision
    assert revision.json()["error"] == "NotFound"
    assert "catalog/staging has no release r2" in revision.json()["message"]

    no_runs = story["evidence-latest"]
    assert_clean_error(no_runs, 1)
    assert "no pipeline runs recorded" in no_runs.output

    neither = story["evidence-neither"]
    assert_clean_error(neither, 1)
    assert "no pipeline run 'nope'" in neither.output
    assert "not a release either" in neither.output and "SERVICE/ENV" in neither.output


@pytest.mark.parametrize(
    ("key", "wrong", "meant"),
    [
        ("build-catalg", "unknown service 'catalg'", "did you mean 'catalog'?"),
        ("logs-stagin", "unknown environment 'stagin'", "'staging'"),
        ("deploy-catalg", "unknown service 'catalg'", "'catalog'"),
    ],
)
def test_unknown_names_suggest_the_right_one(
    story: Story, key: str, wrong: str, meant: str
) -> None:
    result = story[key]
    assert_clean_error(result, 3)
    body = result.json()
    assert body["error"] == "NotFound"
    assert wrong in body["message"]
    assert meant in body["hint"]


def test_a_name_that_looks_like_markup_is_printed_as_written(story: Story) -> None:
    result = story["logs-markup"]
    assert_clean_error(result, 3)
    assert "'[/x]'" in result.stderr, result


def test_tokens_say_who_calls_and_what_they_may_do(story: Story) -> None:
    me = story["whoami"].json()
    assert me["role"] == "admin" and me["environments"] == ["*"]
    made = story["token"]
    assert made.code == 0, made
    assert "for ci-shop: viewer in staging, never expires" in made.stdout
    secret = made.stdout.strip().splitlines()[-1]
    assert secret not in story["tokens"].stdout  # shown once, kept as a hash

    viewer = story["whoami-viewer"]
    assert viewer.code == 0, viewer
    assert viewer.stdout.strip() == "ci-shop: viewer in staging"
    assert story["status-viewer"].code == 0, story["status-viewer"]
    assert_clean_error(story["deploy-viewer"], 13)  # Forbidden: a viewer does not deploy

    listed = {t["identity"]: t for t in story["tokens"].json()}
    assert listed["ci-shop"]["role"] == "viewer"
    assert listed["ci-shop"]["environments"] == ["staging"]
    assert me["identity"] in listed and listed[me["identity"]]["role"] == "admin"
    assert "ci-shop" in story["tokens-human"].stdout

    assert story["revoke"].code == 0, story["revoke"]
    assert f"revoked {listed['ci-shop']['id']} (ci-shop)" in story["revoke"].stdout
    revoked = story["status-revoked"]
    assert_clean_error(revoked, 12)  # Unauthenticated
    assert "CONVEYOR_TOKEN" in revoked.stderr
    unknown = story["status-unknown"]
    assert unknown.code == 12 and unknown.json()["error"] == "Unauthenticated"


def test_down_leaves_nothing_behind(story: Story) -> None:
    assert story["down"].code == 0, story["down"]
    assert not (story.root / ".conveyor" / "server.json").exists()
    json.loads(story["up"].stdout)


def test_up_and_dashboard_give_the_dashboard_address(story: Story) -> None:
    up = story["up"].json()
    assert up["dashboard"] == up["url"] + "/ui/"
    shown = story["dashboard"]
    assert shown.code == 0, shown
    assert shown.json() == {
        "url": up["url"] + "/ui/",
        "token_file": str(story.root / ".conveyor" / "admin.token"),
    }
