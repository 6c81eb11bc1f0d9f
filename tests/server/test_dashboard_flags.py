"""Flags in the dashboard over plain HTTP against a real server: the list with each
environment's state and drift, a flag's page (definition, history, a guarded rollout's
progress, live over the page's stream), and its buttons — shown only to those allowed,
CSRF-protected, with a reason, through the same use case as the API (a ledger event with
the signed-in person as actor)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor.server.stack import Stack

from .dashboard_support import Browser
from .support import Client, serve

CONFIG = """\
project: flagged
services:
  web:
    build: {run: "true", outputs: [app]}
    run: "true"
environments:
  staging: {}
  production: {}
segments:
  staff:
    description: our own people
    when: [{attribute: email, op: ends_with, values: ["@corp.com"]}]
flags:
  new-checkout:
    description: one-page checkout
    environments:
      staging: {on: true}
      production:
        on: true
        rules: [{segments: [staff], serve: "on"}]
        rollout: {percentage: 5, variant: "on"}
  banner:
    kind: string
    variants: {blue: "#00f", red: "#f00"}
    default: blue
    off: blue
    environments:
      staging: {on: true, serve: red}
  dark-mode:
    environments:
      staging: {on: true}
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Client]]:
    with serve(tmp_path_factory.mktemp("flags"), CONFIG) as both:
        yield both


def _browser(client: Client, role: str, envs: list[str] | None = None) -> Browser:
    name = f"{role}-{time.monotonic_ns()}"
    body = {"name": name, "role": role, "environments": envs or ["*"]}
    answer = client.post("/api/v1/tokens", json_body=body)
    assert answer.status_code == 201, answer.text
    browser = Browser(f"http://127.0.0.1:{client.port}")
    assert browser.sign_in(str(answer.json()["secret"])).status_code == 303
    return browser


@pytest.fixture
def admin(served: tuple[Stack, Client]) -> Iterator[Browser]:
    _, client = served
    browser = Browser(f"http://127.0.0.1:{client.port}")
    assert browser.sign_in(str(client.token)).status_code == 303
    yield browser
    browser.close()


def _cell(page: str, key: str, env: str) -> str:
    row = re.search(rf'<tr id="f-{re.escape(key)}">(.*?)</tr>', page, re.S)
    assert row is not None, page
    cell = re.search(rf'data-env="{env}">(.*?)</td>', row.group(1), re.S)
    assert cell is not None, row.group(1)
    return re.sub(r"<[^>]+>", "", cell.group(1))


def test_the_list_shows_every_flag_in_every_environment(admin: Browser) -> None:
    page = admin.get("/ui/flags")
    assert page.status_code == 200, page.text
    text = page.text
    assert (
        'href="/ui/flags" aria-current="page"' in text and 'data-stream="/ui/stream/flags' in text
    )
    assert _cell(text, "new-checkout", "production") == "on · 5% · 1 rule"
    assert _cell(text, "new-checkout", "staging") == "on"
    assert _cell(text, "banner", "production") == "off"
    assert "string" in text and "<code>blue</code>" in text


def test_a_flag_page_shows_its_definition(admin: Browser) -> None:
    page = admin.get("/ui/flags/new-checkout").text
    assert "one-page checkout" in page and "<code>staff</code> — our own people" in page
    assert "5% get <code>on</code>" in page and "in <code>staff</code> → <code>on</code>" in page
    assert "as in conveyor.yaml" in page
    missing = admin.get("/ui/flags/nope")
    assert missing.status_code == 404 and "unknown flag" in missing.text


def test_turning_a_flag_off_goes_through_the_use_case_onto_the_ledger(
    served: tuple[Stack, Client], admin: Browser
) -> None:
    stack, _ = served
    page = admin.get("/ui/flags/dark-mode").text
    assert 'action="/ui/flags/dark-mode/state"' in page and 'id="kill"' in page
    no_reason = admin.post(
        "/ui/flags/dark-mode/state",
        {"csrf": admin.csrf(), "env": "staging", "state": "off", "reason": " "},
    )
    assert no_reason.status_code == 400 and "reason" in no_reason.text
    done = admin.post(
        "/ui/flags/dark-mode/state",
        {"csrf": admin.csrf(), "env": "staging", "state": "off", "reason": "INC-7 dark text"},
    )
    assert done.status_code == 303 and done.headers["location"].startswith("/ui/flags/dark-mode?")
    [event] = [
        e for e in stack.store.events(kinds=("flag.changed",)) if e.details["flag"] == "dark-mode"
    ]
    assert event.actor == "admin@test" and event.env == "staging"
    assert event.details["reason"] == "INC-7 dark text"
    assert event.details["diff"] == [
        {"path": "environments.staging.on", "before": True, "after": False}
    ]
    shown = admin.get(done.headers["location"]).text
    assert "dark-mode turned off in staging" in shown and "INC-7 dark text" in shown
    assert "changed live, differs from the file" in shown
    listed = admin.get("/ui/flags").text
    assert _cell(listed, "dark-mode", "staging") == "off" and "≠ file" in listed


def test_the_kill_switch_turns_the_flag_off_everywhere(
    served: tuple[Stack, Client], admin: Browser
) -> None:
    stack, _ = served
    done = admin.post("/ui/flags/banner/kill", {"csrf": admin.csrf(), "reason": "wrong colour"})
    assert done.status_code == 303
    [event] = stack.store.events(kinds=("flag.killed",))
    assert event.actor == "admin@test" and event.details["flag"] == "banner"
    listed = admin.get("/ui/flags").text
    assert _cell(listed, "banner", "staging") == "off"
    assert _cell(listed, "banner", "production") == "off"


def test_a_viewer_sees_no_buttons_and_forged_forms_are_refused(
    served: tuple[Stack, Client],
) -> None:
    stack, client = served
    viewer = _browser(client, "viewer")
    page = viewer.get("/ui/flags/new-checkout").text
    assert "/state" not in page and "/kill" not in page and "Confirm" not in page
    before = len(stack.store.events(kinds=("flag.changed", "flag.killed")))
    forged = viewer.post(
        "/ui/flags/new-checkout/state",
        {"csrf": viewer.csrf(), "env": "staging", "state": "off", "reason": "x"},
    )
    assert forged.status_code == 403
    killed = viewer.post("/ui/flags/new-checkout/kill", {"csrf": viewer.csrf(), "reason": "x"})
    assert killed.status_code == 403
    assert len(stack.store.events(kinds=("flag.changed", "flag.killed"))) == before
    viewer.close()


def test_a_staging_deployer_may_flip_staging_only(served: tuple[Stack, Client]) -> None:
    stack, client = served
    deployer = _browser(client, "deployer", ["staging"])
    page = deployer.get("/ui/flags/new-checkout").text
    assert 'id="flip-staging"' in page and 'id="flip-production"' not in page
    assert 'id="kill"' not in page  # the kill switch touches production too
    before = len(stack.store.events(kinds=("flag.changed", "flag.killed")))
    forged = deployer.post(
        "/ui/flags/new-checkout/state",
        {"csrf": deployer.csrf(), "env": "production", "state": "off", "reason": "x"},
    )
    assert forged.status_code == 403 and "production" in forged.text
    killed = deployer.post("/ui/flags/new-checkout/kill", {"csrf": deployer.csrf(), "reason": "x"})
    assert killed.status_code == 403
    assert len(stack.store.events(kinds=("flag.changed", "flag.killed"))) == before
    deployer.close()


def test_forms_without_the_csrf_token_are_refused(
    served: tuple[Stack, Client], admin: Browser
) -> None:
    stack, _ = served
    form = {"env": "staging", "state": "off", "reason": "no token"}
    for data in (form, {**form, "csrf": "wrong"}):
        refused = admin.post("/ui/flags/new-checkout/state", data)
        assert refused.status_code == 403 and "CSRF" in refused.text
    assert admin.post("/ui/flags/new-checkout/kill", {"reason": "x"}).status_code == 403
    assert not [
        e
        for e in stack.store.events(kinds=("flag.changed", "flag.killed"))
        if e.details["flag"] == "new-checkout"
    ]


def _events(lines: Iterator[str], within: float = 20.0) -> Iterator[tuple[str, str]]:
    """(event, data) messages; fails when none came for ``within`` seconds (the stream's
    keep-alive comments come every 15 s, so a missing update fails instead of hanging)."""
    event, data = "message", []
    last = time.monotonic()
    for line in lines:
        if time.monotonic() - last > within:
            raise AssertionError(f"no message from the stream in {within} s")
        if not line:
            if data or event != "message":
                yield event, "\n".join(data)
                last = time.monotonic()
            event, data = "message", []
        elif line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: "):
            data.append(line.removeprefix("data: "))


def test_a_guarded_rollout_progresses_live_on_the_flag_page(
    served: tuple[Stack, Client], admin: Browser, tmp_path: Path
) -> None:
    stack, client = served
    started = client.post(
        "/api/v1/flags/new-checkout/guarded",
        json_body={"env": "production", "steps": [10, 50, 100], "interval": 600, "reason": "go"},
    )
    assert started.status_code == 201, started.text
    page = admin.get("/ui/flags/new-checkout").text
    assert 'aria-current="step">10%' in page and "step 1/3" in page
    listed = admin.get("/ui/flags").text
    assert "guarded" in _cell(listed, "new-checkout", "production")
    with admin.client.stream("GET", "/ui/stream/flags/new-checkout", timeout=30) as stream:
        messages = _events(stream.iter_lines())
        assert next(messages)[0] == "ready"

        def report(on: tuple[int, int], off: tuple[int, int]) -> None:
            rows = [
                {
                    "env": "production",
                    "flag": "new-checkout",
                    "variant": v,
                    "requests": n,
                    "errors": e,
                }
                for v, (n, e) in (("on", on), ("off", off))
            ]
            taken = client.post("/api/v1/flags/outcomes", json_body={"counts": rows})
            assert taken.status_code == 202, taken.text

        # Counts that prove nothing yet: no ledger event, the page still moves (its watch).
        head = stack.store.ledger_head()
        report((20, 0), (20, 0))
        assert stack.app.flag_rollouts.tick() == ["wait"]
        assert stack.store.ledger_head() == head
        event, data = next(messages)
        assert event == "live" and "<td>20</td><td>0</td><td>0.00%</td>" in data
        assert "running" in data
        # Then the treatment fails far more than control: the judge aborts.
        report((380, 40), (380, 0))
        assert stack.app.flag_rollouts.tick() == ["abort"]
        event, data = next(messages)
    assert event == "live"
    assert "aborted" in data and 'data-verdict="fail"' in data
    assert "<td>400</td><td>40</td><td>10.00%</td>" in data  # the treatment's exposures/errors
    assert "<code>flag.rollout.aborted</code>" in data  # the judge's move, in the history
    assert "on is worse than off" in data


def test_the_list_updates_live_when_a_flag_changes(
    served: tuple[Stack, Client], admin: Browser
) -> None:
    _, client = served
    with admin.client.stream("GET", "/ui/stream/flags", timeout=30) as stream:
        messages = _events(stream.iter_lines())
        assert next(messages)[0] == "ready"
        changed = client.post(
            "/api/v1/flags/new-checkout/rollout",
            json_body={"env": "staging", "percentage": 40, "reason": "from the CLI"},
        )
        assert changed.status_code == 200, changed.text
        event, data = next(messages)
    assert event == "live"
    assert _cell(data, "new-checkout", "staging") == "on · 40%"


def test_the_access_policy_narrows_the_buttons_as_it_narrows_the_use_case(
    tmp_path: Path,
) -> None:
    """A deployer in every environment by token, but production's deployers are named by
    the applied ``access:`` policy: no production button, no kill switch, 403 if forged."""
    policy = (
        "access:\n"
        "  environments:\n"
        "    production: {deployer: [user:dana]}\n"
        '    "*": {deployer: ["*"]}\n'
    )
    with serve(tmp_path / "p", CONFIG + policy) as (stack, client):
        assert client.post("/api/v1/access/apply", json_body={}).status_code == 200
        ana = _browser(client, "deployer")
        page = ana.get("/ui/flags/new-checkout").text
        assert 'id="flip-staging"' in page and 'id="flip-production"' not in page
        assert 'id="kill"' not in page
        forged = ana.post(
            "/ui/flags/new-checkout/state",
            {"csrf": ana.csrf(), "env": "production", "state": "off", "reason": "x"},
        )
        assert forged.status_code == 403
        assert not stack.store.events(kinds=("flag.changed",))
        ana.close()
