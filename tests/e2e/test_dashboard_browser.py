"""The dashboard in a real headless Chromium against a real `conveyor server`.

The example catalog service runs as real processes behind the built-in router; the CLI
builds and deploys as a user would; Debian's ``chromium`` and ``chromium-driver`` (driven
by Selenium, nothing downloaded) show the pages. One server, one browser, the scenarios in
order: the overview shows every cell; a canary started from the CLI progresses on the
service page without a reload; a request without the CSRF token is refused; an approver
approves from the approval page and the rollout starts; a viewer sees no buttons and is
refused when forging the form; a deployer turns a flag off from its page and the Flags
list shows it off. Screenshots go to ``$CONVEYOR_TEST_ARTIFACTS/dashboard``
(default ``test-artifacts/dashboard``, not committed).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.controller.harness import write_project

from .server_process import ServerProcess, build

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
ARTIFACTS = Path(
    os.environ.get(
        "CONVEYOR_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"
    )
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        CHROMIUM is None or DRIVER is None,
        reason="no headless browser here: apt-get install chromium chromium-driver",
    ),
]

WAIT = 30.0
FLAGS = """
flags:
  new-search:
    description: the new search box
    environments:
      canary: {on: true}
      production: {on: true, rollout: {percentage: 20, variant: "on"}}
"""


def _driver() -> Any:
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium download a browser
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1360,900",
        "--force-prefers-reduced-motion",
    ):
        options.add_argument(arg)
    return webdriver.Chrome(options=options, service=Service(executable_path=str(DRIVER)))


def _cli(root: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "conveyor", "-C", str(root), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _until(condition: Any, what: str, timeout: float = WAIT) -> Any:
    """Poll a condition on the page; an element replaced by a navigation in
    between (the form posts and the next page loads) means "look again"."""
    from selenium.common.exceptions import StaleElementReferenceException

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = condition()
        except StaleElementReferenceException:
            value = None
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


class Load(threading.Thread):
    """Steady requests to one address, so the charts have something to draw."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=2) as client:
            while not self.stop.is_set():
                with contextlib.suppress(httpx.HTTPError):
                    client.get(self.url)
                time.sleep(0.03)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("dashboard")
    write_project(
        root,
        instances=1,
        verification="1s",
        deadline="30s",
        scale_down_delay="1s",
        project=f"dash{uuid.uuid4().hex[:6]}",
        canary_steps="[{set_weight: 25}, {pause: 3s}, {set_weight: 50}, {pause: {}}]",
        env_fields={
            "production": "approval: {required: 1, prevent_self_review: true, expires: 1h}"
        },
        top=FLAGS,
    )
    server = ServerProcess(root)
    driver = None
    loads: list[Load] = []
    shots = ARTIFACTS / "dashboard"
    shots.mkdir(parents=True, exist_ok=True)
    try:
        server.start(timeout=30)
        tokens = {
            name: server.post(
                "/api/v1/tokens", {"name": name, "role": role, "environments": ["*"]}
            )["secret"]
            for name, role in (("ana", "deployer"), ("vic", "viewer"))
        }
        (root / "services" / "catalog" / "VERSION").write_text("v1\n")
        v1 = build(root)
        _cli(root, "deploy", "catalog", "--env", "canary", "--artifact", v1, "--wait")
        driver = _driver()
        yield {
            "root": root,
            "server": server,
            "driver": driver,
            "tokens": tokens,
            "admin": (root / ".conveyor" / "admin.token").read_text().strip(),
            "v1": v1,
            "shots": shots,
            "load": lambda url: loads.append(_started(url)),
        }
    finally:
        for load in loads:
            load.stop.set()
        if driver is not None:
            driver.quit()
        server.down()  # stopping the server alone leaves router and instances running


def _started(url: str) -> Load:
    load = Load(url)
    load.start()
    return load


def _sign_in(world: dict[str, Any], token: str) -> None:
    from selenium.webdriver.common.by import By

    driver = world["driver"]
    driver.delete_all_cookies()
    driver.get(world["server"].url + "/ui/")
    _until(lambda: "/ui/login" in driver.current_url, "the sign-in form")
    field = driver.find_element(By.ID, "token")
    assert driver.find_element(By.CSS_SELECTOR, "label[for=token]").text == "Token"
    field.send_keys(token)
    field.submit()
    _until(lambda: driver.current_url.endswith("/ui/"), "the overview after signing in")


def _shot(world: dict[str, Any], name: str) -> None:
    world["driver"].save_screenshot(str(world["shots"] / f"{name}.png"))


def _post_from_page(world: dict[str, Any], path: str, fields: dict[str, str]) -> int:
    """What a forged form does: a same-origin POST from the page, with the given fields."""
    script = (
        "const done = arguments[arguments.length - 1];"
        "fetch(arguments[0], {method: 'POST', body: new URLSearchParams(arguments[1]),"
        " redirect: 'manual'}).then(r => done(r.status)).catch(e => done(String(e)));"
    )
    return int(world["driver"].execute_async_script(script, path, fields))


def _text(driver: Any, selector: str) -> str:
    """The text of the first element matching ``selector``, or "" while a page loads."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        found = driver.find_elements(By.CSS_SELECTOR, selector)
        return str(found[0].text) if found else ""
    except StaleElementReferenceException:
        return ""


def test_the_overview_shows_every_cell(world: dict[str, Any]) -> None:
    from selenium.webdriver.common.by import By

    _sign_in(world, world["admin"])
    driver = world["driver"]
    cells = driver.find_elements(By.CSS_SELECTOR, "table.grid td.cell")
    envs = [th.text for th in driver.find_elements(By.CSS_SELECTOR, "table.grid thead th")][1:]
    assert sorted(envs) == ["canary", "dev", "haproxy", "production", "staging"]
    assert len(cells) == len(envs)  # one service, every environment, deployed or not
    canary = driver.find_element(By.ID, "c-catalog--canary")
    assert "succeeded" in canary.text and "1/1" in canary.text
    assert driver.find_element(By.ID, "c-catalog--dev").text == "—"
    _shot(world, "overview")
    # Keyboard first: the skip link is the first stop, then the navigation.
    from selenium.webdriver.common.keys import Keys

    driver.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)
    assert driver.switch_to.active_element.text == "Skip to content"
    # Dark when the system is: the page follows prefers-color-scheme.
    background = "return getComputedStyle(document.body).backgroundColor"
    assert driver.execute_script(background) == "rgb(255, 255, 255)"
    driver.execute_cdp_cmd(
        "Emulation.setEmulatedMedia",
        {"features": [{"name": "prefers-color-scheme", "value": "dark"}]},
    )
    assert driver.execute_script(background) == "rgb(13, 17, 23)"
    _shot(world, "overview-dark")
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})


def test_a_canary_from_the_cli_progresses_on_the_service_page_without_reload(
    world: dict[str, Any],
) -> None:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    driver, server, root = world["driver"], world["server"], world["root"]
    status = server.get("/api/v1/status", env="canary")["services"][0]
    world["load"](status["address"] + "/")
    driver.get(server.url + "/ui/services/catalog/canary")
    driver.execute_script("window.__sameDocument = 'yes';")
    _until(lambda: "live" in driver.find_element(By.ID, "live-state").text, "the stream to open")
    (root / "services" / "catalog" / "VERSION").write_text("v2\n")
    v2 = build(root)
    _cli(root, "deploy", "catalog", "--env", "canary", "--artifact", v2)

    def text(selector: str) -> str:
        try:
            found = driver.find_elements(By.CSS_SELECTOR, selector)
            return found[0].text if found else ""
        except StaleElementReferenceException:  # a section swapped as we read it
            return ""

    seen: list[str] = []

    def at_half() -> bool:
        # Every split the page shows, in order, without a reload.
        shown = text("[data-weights]")
        if shown and (not seen or seen[-1] != shown):
            seen.append(shown)
        return "r2: 50%" in shown

    _until(at_half, "50% of users on the canary")
    # 25% lasts 3 s (a pause step): on a loaded machine one sample may fall outside it.
    assert any("r2: 25%" in split for split in seen) or len(seen) >= 2, seen
    assert driver.execute_script("return window.__sameDocument") == "yes"  # no reload
    assert "progressing" in text("[data-phase]")
    # Buttons for an admin, confirmed before they act.
    assert driver.find_elements(By.CSS_SELECTOR, "details#ctl-promote summary")
    _until(
        lambda: (
            driver.execute_script("return document.querySelectorAll('.chart canvas').length") == 3
        ),
        "the charts",
    )
    time.sleep(4)  # a few more samples on the charts
    driver.set_window_size(1360, 1900)
    _shot(world, "service-canary")
    driver.set_window_size(1360, 900)


def test_a_form_without_the_csrf_token_is_refused(world: dict[str, Any]) -> None:
    driver, server = world["driver"], world["server"]
    driver.get(server.url + "/ui/services/catalog/canary")
    status = _post_from_page(world, "/ui/services/catalog/canary/control", {"action": "abort"})
    assert status == 403
    phase = server.get("/api/v1/status", env="canary")["services"][0]["phase"]
    assert phase == "progressing"


def test_an_approver_approves_from_the_approval_page_and_the_rollout_starts(
    world: dict[str, Any],
) -> None:
    from selenium.webdriver.common.by import By

    driver, server, root = world["driver"], world["server"], world["root"]
    _cli(root, "deploy", "catalog", "--env", "production", "--artifact", world["v1"])
    [waiting] = server.get("/api/v1/approvals")["approvals"]
    release_id = waiting["release"]["id"]
    # Who asked sees why they cannot approve, not a bare refusal.
    driver.get(f"{server.url}/ui/approvals/{release_id}")
    assert "requires someone else's approval" in driver.find_element(By.TAG_NAME, "main").text
    assert not driver.find_elements(By.CSS_SELECTOR, "button[value=approve]")

    _sign_in(world, world["tokens"]["ana"])
    driver.get(server.url + "/ui/approvals")
    driver.find_element(By.LINK_TEXT, waiting["release"]["name"]).click()
    driver.find_element(By.ID, "comment").send_keys("evidence checked: signed, gates green")
    _shot(world, "approval")
    driver.find_element(By.CSS_SELECTOR, "button[value=approve]").click()
    _until(lambda: "approved" in _text(driver, "main"), "the notice")
    release = server.get(f"/api/v1/releases/{release_id}")
    assert release["phase"] != "pending_approval"
    votes = server.get("/api/v1/events", release=release_id)["events"]
    [vote] = [e for e in votes if e["kind"] == "approval.approved"]
    assert vote["actor"] == "ana" and vote["details"]["page"].startswith("sha256:")


def test_a_viewer_sees_no_buttons_and_a_forged_form_gets_403(world: dict[str, Any]) -> None:
    from selenium.webdriver.common.by import By

    driver, server = world["driver"], world["server"]
    _sign_in(world, world["tokens"]["vic"])
    driver.get(server.url + "/ui/services/catalog/canary")
    assert not driver.find_elements(By.CSS_SELECTOR, "form[action$='/control']")
    assert not driver.find_elements(By.CSS_SELECTOR, "details.control")
    csrf = driver.find_element(By.CSS_SELECTOR, "form.who input[name=csrf]").get_attribute("value")
    status = _post_from_page(
        world, "/ui/services/catalog/canary/control", {"action": "abort", "csrf": csrf}
    )
    assert status == 403
    assert server.get("/api/v1/status", env="canary")["services"][0]["phase"] == "progressing"
    # Reading is what a viewer does: the ledger with its verification, a release, pipelines.
    driver.get(server.url + "/ui/ledger?kind=approval.")
    assert "Chain verified" in driver.find_element(By.CSS_SELECTOR, ".chain").text
    assert "approval.approved" in driver.find_element(By.CSS_SELECTOR, "table.events").text
    _shot(world, "ledger")
    release = server.get("/api/v1/history", service="catalog", env="canary")["releases"][0]
    driver.get(f"{server.url}/ui/releases/{release['id']}")
    assert "re-hashed, match" in driver.find_element(By.TAG_NAME, "main").text
    _shot(world, "release")


def test_a_button_is_confirmed_and_lands_on_the_ledger_as_who_pressed_it(
    world: dict[str, Any],
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver, server = world["driver"], world["server"]
    _sign_in(world, world["tokens"]["ana"])
    driver.get(server.url + "/ui/services/catalog/canary")
    confirm = driver.find_element(By.CSS_SELECTOR, "#ctl-promote button[type=submit]")
    assert not confirm.is_displayed()  # nothing happens on the first press
    driver.find_element(By.CSS_SELECTOR, "#ctl-promote summary").send_keys(Keys.ENTER)
    time.sleep(2.5)  # live updates arrive meanwhile; the open confirmation stays as it is
    confirm = driver.find_element(By.CSS_SELECTOR, "#ctl-promote button[type=submit]")
    assert confirm.is_displayed() and confirm.text == "Confirm promote"
    confirm.click()
    _until(
        lambda: "promote: catalog/canary" in _text(driver, "main"),
        "the outcome of the button",
    )
    status = server.get("/api/v1/status", env="canary")["services"][0]
    events = server.get("/api/v1/events", service="catalog", env="canary")["events"]
    pressed = [e for e in events if e["kind"] == "rollout.promote"]
    assert pressed and pressed[-1]["actor"] == "ana", events[-5:]
    assert status["phase"] in ("progressing", "verifying", "succeeded")


def test_a_flag_turned_off_from_its_page_shows_off_in_the_list(world: dict[str, Any]) -> None:
    from selenium.webdriver.common.by import By

    driver, server = world["driver"], world["server"]
    _sign_in(world, world["tokens"]["ana"])
    driver.find_element(By.LINK_TEXT, "Flags").click()
    cell = "#f-new-search td[data-env=canary] .st"
    assert driver.find_element(By.CSS_SELECTOR, cell).text == "on"
    assert (
        "on · 20%"
        in driver.find_element(By.CSS_SELECTOR, "#f-new-search td[data-env=production]").text
    )
    driver.find_element(By.LINK_TEXT, "new-search").click()
    confirm = driver.find_element(By.CSS_SELECTOR, "#flip-canary button[type=submit]")
    assert not confirm.is_displayed()  # a confirmation first
    driver.find_element(By.CSS_SELECTOR, "#flip-canary summary").click()
    reason = driver.find_element(By.CSS_SELECTOR, "#flip-canary input[name=reason]")
    confirm.click()  # no reason yet: the browser asks for one, nothing is sent
    assert driver.execute_script("return arguments[0].validity.valueMissing", reason)
    reason.send_keys("search latency in canary")
    _shot(world, "flag")
    confirm.click()
    _until(lambda: "turned off in canary" in _text(driver, "main"), "the outcome of the button")
    events = server.get("/api/v1/flags/new-search/history")["events"]
    assert events[-1]["actor"] == "ana"
    assert events[-1]["details"]["reason"] == "search latency in canary"
    driver.find_element(By.LINK_TEXT, "Flags").click()
    assert driver.find_element(By.CSS_SELECTOR, cell).text == "off"
    assert driver.find_elements(By.CSS_SELECTOR, "#f-new-search .pill.drift")
    _shot(world, "flags")
