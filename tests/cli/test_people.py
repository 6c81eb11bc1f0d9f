"""People in the loop through the real `conveyor` command and a real server.

One story per module (a server and four rollouts cost ~30 s): production asks for one
approval from the ``sre`` group and reads a secret from the server's environment; the
access policy is applied by an admin (a deployer's attempt is refused first); alice
deploys with ``--wait`` and waits; `approvals` lists her release; she cannot approve it
herself; `show-approval` shows the page; bob approves and the release runs. A second
release brings carol's commit, a file and a config key (the page shows them), dana
approves it; a third is rejected and `deploy --wait` exits 11. The emergency path is
refused without the role, taken with it, open in `status` until bob reviews it. The audit
export (jsonl to a 0600 file, csv to stdout) holds the approval with its page hash, the
override and its review, and no secret value; after a ledger row is edited in the
database, the export says the ledger is broken and exits 14.

The fixture only runs the story and records what each command printed; each test asserts
one behaviour on that record. The answers the real server gave are replayed from a stub to
check what the new commands import.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.artifacts.gitrepo import commit_all, git, init_repo
from tests.cli.canned import project
from tests.cli.stub_api import StubApi, stub_api
from tests.cli.test_structure import HEAVY, NOT_FOR_A_CLIENT, loaded, probe
from tests.controller.harness import write_project

from .support import Result, assert_clean_error, cli_env, conveyor, processes_of

pytestmark = pytest.mark.integration

SECRET_VARIABLE = "PEOPLE_DB_PASSWORD"
SECRET = "pw-" + uuid.uuid4().hex  # must never be printed, exported or shown
SECRET_REFERENCE = "{secret: {env: " + SECRET_VARIABLE + "}}"
PRODUCTION = (
    "approval: {required: 1, from: [group:sre]}\n"
    "    services: {catalog: {config: {DB_PASSWORD: " + SECRET_REFERENCE + "}}}"
)
ACCESS = """
access:
  groups:
    sre: [alice, bob, dana, ops]
  environments:
    "*": {deployer: ["*"], approver: [group:sre], emergency: [user:ops]}
"""
PEOPLE = {"alice": "deployer", "bob": "deployer", "dana": "deployer", "ops": "admin"}
CAROL = "Carol <carol@example.com>"


@dataclass
class Story:
    root: Path
    tokens: dict[str, str] = field(default_factory=dict)
    runs: dict[str, Result] = field(default_factory=dict)
    seen: dict[str, Any] = field(default_factory=dict)

    def env(self, who: str | None) -> dict[str, str] | None:
        return cli_env(CONVEYOR_TOKEN=self.tokens[who]) if who else None

    def run(self, key: str, *args: str, who: str | None = None) -> Result:
        self.runs[key] = conveyor(*args, root=self.root, env=self.env(who))
        return self.runs[key]

    def start(self, *args: str, who: str) -> subprocess.Popen[str]:
        """A command left running (``deploy --wait``) while others act."""
        return subprocess.Popen(
            [sys.executable, "-m", "conveyor", "-C", str(self.root), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env=self.env(who),
        )

    def finish(self, key: str, process: subprocess.Popen[str], *args: str) -> Result:
        try:
            stdout, stderr = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
        self.runs[key] = Result(tuple(args), process.returncode, stdout, stderr)
        return self.runs[key]

    def waiting(self, key: str) -> list[dict[str, Any]]:
        """`approvals --json` once something waits (a deploy started elsewhere)."""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            result = self.run(key, "approvals", "--json")
            if result.code != 0 or result.json():
                break
            time.sleep(0.2)
        return self[key].json() if self[key].code == 0 else []

    def __getitem__(self, key: str) -> Result:
        if key not in self.runs:
            pytest.fail(f"the story stopped before `{key}`; ran: {list(self.runs)}")
        return self.runs[key]


def _deploy_and_wait(story: Story, key: str, *extra: str) -> subprocess.Popen[str]:
    args = ("deploy", "catalog", "--env", "production", *extra, "--wait")
    process = story.start(*args, who="alice")
    story.seen[f"{key}-args"] = args
    return process


def _tell(story: Story) -> None:
    root = story.root
    up = conveyor("up", "--json", root=root, env=cli_env(**{SECRET_VARIABLE: SECRET}))
    story.runs["up"] = up
    if up.code != 0:
        return
    for name, role in PEOPLE.items():
        made = story.run(f"token-{name}", "tokens", "create", name, "--role", role, "--json")
        story.tokens[name] = made.json()["secret"] if made.code == 0 else "-"

    story.run("access-before", "access", "show", "--json")
    story.run("access-before-human", "access", "show")
    story.run("apply-deployer", "access", "apply", who="alice")
    story.run("apply", "access", "apply", "--json")
    story.run("access-after", "access", "show", "--json")
    story.run("build", "build", "catalog", "--json")

    # 1. alice asks; she cannot approve her own release; bob can.
    first = _deploy_and_wait(story, "first")
    story.waiting("approvals")
    story.run("approvals-human", "approvals")
    story.run("self-approve", "approve", "catalog/production", who="alice")
    story.run("show-first", "show-approval", "catalog/production", "--json")
    story.run("show-first-human", "show-approval", "catalog/production")
    story.run(
        "approve-first", "approve", "catalog/production", "--comment", "ok", "--json", who="bob"
    )
    story.finish("deploy-first", first)

    # 2. carol's commit, a changed file and a new config key: the page shows the change.
    server = root / "services" / "catalog" / "app" / "server.py"
    server.write_text(server.read_text() + "\n# carol was here\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "carol's change", "--author", CAROL)
    story.run("build-2", "build", "catalog", "--json")
    second = _deploy_and_wait(story, "second", "--set", "FEATURE=on")
    story.waiting("approvals-2")
    story.run("show-second-human", "show-approval", "catalog/production")
    story.run("show-second", "show-approval", "catalog/production", "--json")
    story.run("approve-second", "approve", "catalog/production", "--json", who="dana")
    story.finish("deploy-second", second)

    # 3. one "no" ends it, and the waiting deploy says so.
    third = _deploy_and_wait(story, "third", "--set", "FEATURE=off")
    story.waiting("approvals-3")
    story.run("reject-usage", "reject", "catalog/production", who="bob")
    story.run("reject", "reject", "catalog/production", "--comment", "not on a friday", who="bob")
    story.finish("deploy-third", third)

    # 4. the emergency path: the role, a reason, on the record, reviewed by someone else.
    story.run("emergency-usage", "deploy", "catalog", "--env", "production", "--emergency")
    story.run(
        "emergency-alice",
        *("deploy", "catalog", "--env", "production", "--emergency", "--reason", "fire"),
        who="alice",
    )
    story.run(
        "emergency",
        *("deploy", "catalog", "--env", "production", "--emergency", "--reason", "site down"),
        "--json",
        who="ops",
    )
    story.run("status-open", "status", "--json")
    story.run("status-open-human", "status")
    story.run("review-self", "review", "catalog/production", "--comment", "me", who="ops")
    story.run(
        "review", "review", "catalog/production", "--comment", "checked the graphs", who="bob"
    )
    story.run("status-closed", "status", "--json")

    # 5. the audit export, then again after someone edits a ledger row in the database.
    exported = root / "audit.jsonl"
    story.run("audit-jsonl", "audit", "export", "--since", "1h", "-o", str(exported), "--json")
    if exported.exists():
        story.seen["audit-mode"] = exported.stat().st_mode & 0o777
        story.seen["audit-jsonl"] = exported.read_text()
    story.run("audit-csv", "audit", "export", "--format", "csv")
    story.run("audit-bad-time", "audit", "export", "--since", "last tuesday")
    with sqlite3.connect(root / ".conveyor" / "state.db") as db:
        db.execute("UPDATE events SET actor = 'mallory' WHERE kind = 'approval.approved'")
    story.run("audit-broken", "audit", "export")


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Story]:
    root = tmp_path_factory.mktemp("people")
    name = f"cli-people-{uuid.uuid4().hex[:8]}"
    write_project(
        root, project=name, instances=1, env_fields={"production": PRODUCTION}, top=ACCESS
    )
    init_repo(root)
    commit_all(root, "v1")
    story = Story(root)
    try:
        _tell(story)
    finally:
        conveyor("down", root=root)
        deadline = time.monotonic() + 10
        while processes_of(root, name) and time.monotonic() < deadline:
            time.sleep(0.1)
    yield story


def test_access_is_applied_by_an_admin_not_by_a_deployer(story: Story) -> None:
    before = story["access-before"].json()
    assert before["applied"] is None and before["pending"] is True
    granted = {(c["role"], c.get("granted")) for c in before["changes"]["changes"]}
    assert ("emergency", "ops") in granted and ("approver", "bob") in granted
    human = story["access-before-human"]
    assert "not in force until an admin applies it" in human.stdout, human
    assert "ops becomes emergency" in human.stdout, human

    assert_clean_error(story["apply-deployer"], 13)
    assert "alice" in story["apply-deployer"].stderr
    applied = story["apply"]
    assert applied.code == 0, applied
    assert applied.json()["version"] > 0
    after = story["access-after"].json()
    assert after["pending"] is False and after["version"] == applied.json()["version"]


def test_a_deploy_to_a_gated_environment_waits_and_approvals_lists_it(story: Story) -> None:
    [item] = story["approvals"].json()
    assert item["release"]["name"] == "catalog/production r1"
    assert item["release"]["actor"] == "alice"
    assert item["approval"]["missing"] == 1
    assert item["approval"]["rule"]["reviewers"] == ["group:sre"]
    human = story["approvals-human"]
    assert human.code == 0, human
    for shown in ("catalog/production r1", "alice", "0/1, 1 missing", "group:sre", "(in 23h"):
        assert shown in human.stdout, (shown, human)

    waited = story["deploy-first"]
    assert waited.code == 0, waited
    assert "waiting for approval" in waited.stdout, waited
    assert "approval.requested" in waited.stdout and "release.approved" in waited.stdout
    assert "catalog/production r1: succeeded" in waited.stdout, waited


def test_the_author_cannot_approve_their_own_release(story: Story) -> None:
    refused = story["self-approve"]
    assert_clean_error(refused, 5)
    assert "alice asked for catalog/production r1" in refused.stderr, refused


def test_the_approval_page_shows_every_section_on_one_screen(story: Story) -> None:
    page = story["show-second"].json()
    assert page["release"]["name"] == "catalog/production r2"
    assert page["artifact"]["bytes_ok"] and page["artifact"]["signature_ok"]
    [commit] = page["changes"]["commits"]
    assert commit["author"] == CAROL
    assert [f["path"] for f in page["changes"]["files"]] == ["services/catalog/app/server.py"]
    assert page["changes"]["config"]["added"] == {"FEATURE": "on"}
    assert page["rollback"]["to"]["revision"] == 1 and page["rollback"]["verifies"]

    human = story["show-second-human"]
    assert human.code == 0, human
    text = human.stdout
    sections = ["artifact", "gates", "changes", "rollout", "rollback", "approval", "page"]
    lines = text.splitlines()
    assert [line.split(" ")[0] for line in lines if line.split(" ")[0] in sections] == sections
    assert lines[-1] == f"page {page['page_hash']}", text
    for shown in (
        "verified now: bytes intact, signature verified",
        "against r1",
        "carol's change",
        CAROL,
        "services/catalog/app/server.py +2 -0",
        "+ FEATURE=on",
        "blue_green to 1 instance(s)",
        "to r1: artifact",
        "present, verifies",
        "waiting for 1 approval(s) from group:sre",
        "not by who asked or wrote a commit",
    ):
        assert shown in text, (shown, text)
    assert len(lines) < 50, text  # one screen


def test_a_secret_is_shown_as_its_reference_only(story: Story) -> None:
    first = story["show-first"].json()
    assert first["changes"]["config"]["added"]["DB_PASSWORD"] == {
        "secret": {"env": SECRET_VARIABLE}
    }
    human = story["show-first-human"]
    assert f"DB_PASSWORD=(secret from env {SECRET_VARIABLE})" in human.stdout, human
    everything = "".join(r.output for r in story.runs.values())
    assert SECRET not in everything
    assert SECRET not in story.seen["audit-jsonl"]


def test_a_second_person_approves_and_the_release_runs(story: Story) -> None:
    vote = story["approve-first"]
    assert vote.code == 0, vote
    answer = vote.json()
    assert answer["decision"] == "approve" and answer["release"]["id"] == 1
    assert answer["page"].startswith("sha256:") and answer["content"].startswith("sha256:")
    assert answer["release"]["phase"] != "pending_approval"

    second = story["deploy-second"]
    assert second.code == 0, second
    assert "catalog/production r2: succeeded" in second.stdout, second
    assert story["approve-second"].json()["release"]["name"] == "catalog/production r2"


def test_a_rejected_release_ends_the_wait_with_exit_11(story: Story) -> None:
    assert story["reject-usage"].code == 2  # reject needs --comment
    rejected = story["reject"]
    assert rejected.code == 0, rejected
    assert "rejected: rejected by bob: not on a friday; it will not run" in rejected.stdout
    waited = story["deploy-third"]
    assert waited.code == 11, waited
    assert "catalog/production r3: rejected — rejected by bob: not on a friday" in waited.stdout


def test_the_emergency_path_needs_the_role_and_a_reason(story: Story) -> None:
    usage = story["emergency-usage"]
    assert_clean_error(usage, 2)
    assert "--emergency and --reason go together" in usage.stderr
    refused = story["emergency-alice"]
    assert_clean_error(refused, 13)
    assert "may not use the emergency path in production" in refused.stderr

    taken = story["emergency"]
    assert taken.code == 0, taken
    release = taken.json()
    assert release["reason"] == "emergency: site down" and release["actor"] == "ops"
    assert release["phase"] != "pending_approval"


def test_an_emergency_review_stays_open_in_status_until_someone_else_signs_it_off(
    story: Story,
) -> None:
    release = story["emergency"].json()
    [row] = [r for r in story["status-open"].json() if r["env"] == "production"]
    assert row["open_reviews"] == [{"id": release["id"], "revision": release["revision"]}]
    human = story["status-open-human"]
    assert f"emergency review open: conveyor review {release['id']}" in human.stdout, human

    assert_clean_error(story["review-self"], 5)
    assert "cannot review it" in story["review-self"].stderr
    reviewed = story["review"]
    assert reviewed.code == 0, reviewed
    assert "its emergency review is closed" in reviewed.stdout
    [row] = [r for r in story["status-closed"].json() if r["env"] == "production"]
    assert row["open_reviews"] == []


def test_the_audit_export_holds_the_approval_the_override_and_the_review(story: Story) -> None:
    exported = story["audit-jsonl"]
    assert exported.code == 0, exported
    summary = exported.json()
    assert summary["format"] == "jsonl" and summary["verification"]["ok"] is True
    assert story.seen["audit-mode"] == 0o600
    records = [json.loads(line) for line in story.seen["audit-jsonl"].splitlines()]
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_kind.setdefault(record["kind"], []).append(record)

    page = story["approve-first"].json()["page"]
    approved = [r for r in by_kind["approval.approved"] if r["actor"] == "bob"]
    assert approved[0]["details"]["page"] == page and page in approved[0]["summary"]
    assert by_kind["approval.rejected"][0]["details"]["comment"] == "not on a friday"
    [override] = by_kind["emergency.override"]
    assert (override["actor"], override["details"]["reason"]) == ("ops", "site down")
    [review] = by_kind["emergency.reviewed"]
    assert (review["actor"], review["details"]["override_by"]) == ("bob", "ops")
    assert records[-1]["kind"] == "ledger.verification" and records[-1]["ok"] is True

    csv = story["audit-csv"]
    assert csv.code == 0, csv
    assert csv.stdout.startswith("seq,at,actor,kind,service,env,release_id,summary,details")
    for shown in (page, "emergency.override", "emergency.reviewed", "ledger verifies"):
        assert shown in csv.stdout, shown
    assert "the ledger verifies" in csv.stderr, csv
    assert SECRET not in csv.stdout
    assert_clean_error(story["audit-bad-time"], 2)


def test_an_export_after_a_ledger_row_was_edited_says_the_ledger_is_broken(story: Story) -> None:
    broken = story["audit-broken"]
    assert broken.code == 14, broken
    assert "the ledger is broken at seq" in broken.stderr, broken
    last = json.loads(broken.stdout.strip().splitlines()[-1])
    assert last["kind"] == "ledger.verification" and last["ok"] is False
    assert "altered" in last["problem"] and last["broken_inside_period"] is True


def test_the_people_commands_load_nothing_heavy(story: Story, tmp_path: Path) -> None:
    """The real server's answers, replayed: the new commands import only the client."""
    root = project(tmp_path / "p")
    release = story["approve-first"].json()["release"]
    stub = StubApi()
    stub.on("GET", "/api/v1/approvals", (200, {"approvals": story["approvals"].json()}))
    stub.on("GET", "/api/v1/approvals/1", (200, story["show-first"].json()))
    stub.on("POST", "/api/v1/approvals/1", (200, release))
    stub.on("POST", "/api/v1/reviews/1", (200, release))
    stub.on("GET", "/api/v1/access", (200, story["access-before"].json()))
    stub.on("POST", "/api/v1/access/apply", (200, story["apply"].json()))
    stub.on("GET", "/api/v1/audit", (200, story.seen["audit-jsonl"].encode()))
    commands = [
        ["approvals"],
        ["show-approval", "1"],
        ["approve", "1"],
        ["reject", "1", "--comment", "no"],
        ["review", "1", "--comment", "checked"],
        ["access", "show"],
        ["access", "apply"],
        ["audit", "export"],
    ]
    with stub_api(root, stub):
        for args in commands:
            code, modules, output = probe(tmp_path, "-C", str(root), *args)
            assert code == 0, (args, output)
            assert loaded(modules, HEAVY) == [], args
            assert loaded(modules, NOT_FOR_A_CLIENT) == [], args
