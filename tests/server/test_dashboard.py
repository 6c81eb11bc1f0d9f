"""The dashboard over plain HTTP against a real server: sign-in, cookies, CSRF, access,
rendering and the live stream. (The browser tests are in tests/e2e/test_dashboard_browser.py.)
"""

from __future__ import annotations

import dataclasses
import json
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from conveyor.core.approval import ApprovalRule
from conveyor.core.state import Phase, RolloutStatus
from conveyor.server.api import create_app
from conveyor.server.stack import Stack, build_stack
from conveyor.store import NewEvent, NewRelease

from .dashboard_support import Browser, config_text, seed
from .support import Client, serve

SERVICES = 12


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Stack, Client, dict[str, int]]]:
    # One service more in conveyor.yaml than in the store: a row never deployed.
    with serve(tmp_path_factory.mktemp("dash"), config_text(SERVICES + 1)) as (stack, client):
        counts = seed(stack.store, SERVICES)
        yield stack, client, counts


@pytest.fixture
def admin(served: tuple[Stack, Client, dict[str, int]]) -> Iterator[Browser]:
    _, client, _ = served
    browser = Browser(f"http://127.0.0.1:{client.port}")
    assert browser.sign_in(str(client.token)).status_code == 303
    yield browser
    browser.close()


def _token(client: Client, name: str, role: str) -> str:
    answer = client.post("/api/v1/tokens", json_body={"name": name, "role": role})
    assert answer.status_code == 201, answer.text
    return str(answer.json()["secret"])


def _browser(client: Client, role: str) -> Browser:
    browser = Browser(f"http://127.0.0.1:{client.port}")
    assert browser.sign_in(_token(client, f"{role}-{time.monotonic_ns()}", role)).status_code == 303
    return browser


def _release_id(stack: Stack, service: str, env: str) -> int:
    return stack.store.releases(service, env, 1)[0].id


def _events(lines: Iterator[str]) -> Iterator[tuple[str, str]]:
    """(event, data) of a Server-Sent Events stream, message by message."""
    event, data = "message", []
    for line in lines:
        if not line:
            if data or event != "message":
                yield event, "\n".join(data)
            event, data = "message", []
        elif line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: "):
            data.append(line.removeprefix("data: "))


# --- signing in -----------------------------------------------------------------------------


def test_pages_send_strangers_to_the_sign_in_form(
    served: tuple[Stack, Client, dict[str, int]],
) -> None:
    _, client, _ = served
    with httpx.Client(base_url=f"http://127.0.0.1:{client.port}") as plain:
        root = plain.get("/")
        assert root.status_code == 303 and root.headers["location"] == "/ui/"
        page = plain.get("/ui/ledger?kind=release.")
        assert page.status_code == 303
        assert page.headers["location"] == "/ui/login?next=%2Fui%2Fledger%3Fkind%3Drelease."
        # A bearer token is the API's door, not the dashboard's.
        bearer = plain.get("/ui/", headers={"authorization": f"Bearer {client.token}"})
        assert bearer.status_code == 303
        assert plain.post("/ui/logout", data={"csrf": "x"}).status_code == 401


def test_signing_in_sets_a_strict_http_only_session_cookie(
    served: tuple[Stack, Client, dict[str, int]],
) -> None:
    _, client, _ = served
    browser = Browser(f"http://127.0.0.1:{client.port}")
    form = browser.get("/ui/login")
    assert "HttpOnly" in form.headers["set-cookie"] and 'type="password"' in form.text
    signed = browser.sign_in(str(client.token))
    assert signed.status_code == 303 and signed.headers["location"] == "/ui/"
    cookies = signed.headers.get_list("set-cookie")
    session = next(c for c in cookies if c.startswith("conveyor_session="))
    assert "HttpOnly" in session and "SameSite=Strict" in session and "Path=/ui" in session
    assert "Secure" not in session  # plain HTTP here; over TLS the cookie is Secure
    assert str(client.token) not in " ".join(cookies)  # the token stays on the server
    assert browser.get("/ui/").status_code == 200
    # Signing out forgets the session on the server, not only in the browser.
    stolen = browser.client.cookies.get("conveyor_session")
    assert browser.post("/ui/logout", {"csrf": browser.csrf()}).status_code == 303
    with httpx.Client(base_url=browser.base, cookies={"conveyor_session": stolen or ""}) as replay:
        assert replay.get("/ui/").status_code == 303
    browser.close()


def test_a_wrong_token_or_a_forged_sign_in_is_refused(
    served: tuple[Stack, Client, dict[str, int]],
) -> None:
    _, client, _ = served
    browser = Browser(f"http://127.0.0.1:{client.port}")
    wrong = browser.sign_in("cvy_" + "A" * 43)
    assert wrong.status_code == 401 and "the token is unknown" in wrong.text
    browser.get("/ui/login")
    forged = browser.post("/ui/login", {"csrf": "guessed", "token": str(client.token)})
    assert forged.status_code == 401 and "expired" in forged.text
    assert "conveyor_session" not in browser.client.cookies
    # After signing in, only dashboard paths are followed.
    browser.get("/ui/login")
    nonce = re.search(r'name="csrf" value="([^"]+)"', browser.get("/ui/login").text)
    assert nonce is not None
    away = browser.post(
        "/ui/login", {"csrf": nonce.group(1), "token": str(client.token), "next": "//evil.example/"}
    )
    assert away.headers["location"] == "/ui/"
    browser.close()


def test_a_revoked_token_ends_its_sessions(served: tuple[Stack, Client, dict[str, int]]) -> None:
    _, client, _ = served
    secret = _token(client, "short-lived", "viewer")
    browser = Browser(f"http://127.0.0.1:{client.port}")
    browser.sign_in(secret)
    assert browser.get("/ui/").status_code == 200
    [record] = [
        t for t in client.get("/api/v1/tokens").json()["tokens"] if t["identity"] == "short-lived"
    ]
    assert client.post(f"/api/v1/tokens/{record['id']}/revoke", json_body={}).status_code == 200
    assert browser.get("/ui/").status_code == 303
    browser.close()


def test_other_origins_are_refused(admin: Browser) -> None:
    refused = admin.get("/ui/", headers={"origin": "http://evil.example"})
    assert refused.status_code == 403
    assert admin.get("/ui/", headers={"host": "evil.example"}).status_code == 403


# --- pages ------------------------------------------------------------------------------------


def test_the_overview_shows_every_cell_and_what_must_stand_out(
    served: tuple[Stack, Client, dict[str, int]], admin: Browser
) -> None:
    _, _, counts = served
    page = admin.get("/ui/")
    assert page.status_code == 200
    html = page.text
    cells = re.findall(r'<td id="c-(svc-\d+)--(\w+)" class="cell ([^"]*)"', html)
    assert len(cells) == (SERVICES + 1) * 3  # every service in every environment
    assert html.count('class="cell empty"') == 3  # the service never deployed
    classes = {(s, e): c for s, e, c in cells}
    assert "moving" in classes[("svc-000", "staging")]  # a canary in progress animates
    assert (
        "alarm" in classes[("svc-000", "production")]
        or "alarm" in classes[("svc-013", "production")]
    )
    # svc-000 runs a newer commit in staging than in production: drift, named.
    assert "drift" in classes[("svc-000", "staging")]
    assert "staging runs" in html and "production runs" in html
    assert "20%</b> canary" in html
    assert counts["progressing"] == 2  # svc-000 and svc-007
    assert page.headers["content-security-policy"].startswith("default-src 'self'")


def test_the_service_page_shows_the_rollout_and_buttons_for_a_deployer(
    served: tuple[Stack, Client, dict[str, int]], admin: Browser
) -> None:
    page = admin.get("/ui/services/svc-007/staging").text
    assert 'aria-current="step"' in page and "set weight 20%" in page
    for action in ("promote", "pause", "abort"):
        assert f'name="action" value="{action}"' in page
    assert 'id="chart-data"' in page and "uPlot.iife.min.js" in page
    unknown = admin.get("/ui/services/nope/staging")
    assert unknown.status_code == 404 and "nope" in unknown.text


def test_a_viewer_sees_no_buttons_and_a_forged_form_is_refused(
    served: tuple[Stack, Client, dict[str, int]],
) -> None:
    stack, client, _ = served
    viewer = _browser(client, "viewer")
    page = viewer.get("/ui/services/svc-007/staging").text
    assert "/control" not in page and "Confirm" not in page
    forged = viewer.post(
        "/ui/services/svc-007/staging/control", {"csrf": viewer.csrf(), "action": "abort"}
    )
    assert forged.status_code == 403 and "may not deploy" in forged.text
    waiting = _release_id(stack, "svc-005", "production")
    approval = viewer.get(f"/ui/approvals/{waiting}")
    assert approval.status_code == 200 and 'value="approve"' not in approval.text
    vote = viewer.post(f"/ui/approvals/{waiting}", {"csrf": viewer.csrf(), "decision": "approve"})
    assert vote.status_code == 403
    assert (
        stack.store.get_release(_release_id(stack, "svc-007", "staging")).phase == Phase.PROGRESSING
    )
    viewer.close()


def test_forms_without_the_csrf_token_are_refused(
    served: tuple[Stack, Client, dict[str, int]], admin: Browser
) -> None:
    stack, _, _ = served
    for data in ({"action": "abort"}, {"action": "abort", "csrf": "wrong"}):
        refused = admin.post("/ui/services/svc-007/staging/control", data)
        assert refused.status_code == 403 and "CSRF" in refused.text
    as_json = admin.client.post(
        "/ui/services/svc-007/staging/control", json={"action": "abort", "csrf": admin.csrf()}
    )
    assert as_json.status_code == 403
    assert admin.post("/ui/logout", {}).status_code == 403
    assert (
        stack.store.get_release(_release_id(stack, "svc-007", "staging")).phase == Phase.PROGRESSING
    )


@pytest.mark.parametrize(
    "path",
    [
        "/ui/approvals",
        "/ui/ledger",
        "/ui/ledger?kind=release.&service=svc-001",
        "/ui/pipelines",
        "/ui/releases/1",
    ],
)
def test_every_page_renders(admin: Browser, path: str) -> None:
    page = admin.get(path)
    assert page.status_code == 200, page.text
    assert "<main" in page.text and 'data-stream="/ui/stream/' in page.text


def test_the_approval_page_explains_and_offers_the_vote(
    served: tuple[Stack, Client, dict[str, int]], admin: Browser
) -> None:
    stack, _, _ = served
    waiting = _release_id(stack, "svc-005", "production")
    page = admin.get(f"/ui/approvals/{waiting}").text
    assert "Rollback plan" in page and "What changes" in page and "Artifact, checked now" in page


def test_the_ledger_shows_the_chain_and_offers_the_audit_export(admin: Browser) -> None:
    page = admin.get("/ui/ledger?kind=release.created").text
    assert (
        "Chain verified" in page and "release.created" in page and "artifact.recorded" not in page
    )
    export = admin.get("/ui/audit?format=csv")
    assert export.status_code == 200 and "attachment" in export.headers["content-disposition"]
    assert "ledger.verification" in export.text


def test_static_files_are_served_and_nothing_else(admin: Browser) -> None:
    script = admin.get("/ui/static/app.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith(
        "text/javascript"
    )
    assert admin.get("/ui/static/vendor/uplot/uPlot.iife.min.js").status_code == 200
    for bad in ("/ui/static/../routes.py", "/ui/static/%2e%2e/routes.py", "/ui/static/.hidden"):
        assert admin.get(bad).status_code == 404


def test_the_stream_sends_only_what_changed(
    served: tuple[Stack, Client, dict[str, int]], admin: Browser
) -> None:
    stack, _, _ = served
    with admin.client.stream("GET", "/ui/stream/", timeout=20) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        messages = _events(stream.iter_lines())
        assert next(messages)[0] == "ready"
        # Something moves: svc-003 in dev starts rolling back.
        release = stack.store.releases("svc-003", "dev", 1)[0]
        stack.store.update_release(
            release.id,
            status=release.status.evolve(phase=Phase.ROLLING_BACK, message="test"),
            expected_version=release.status_version,
            actor="test",
        )
        event, data = next(messages)
        assert event == "cells"
        changed = json.loads(data)
    assert "c-svc-003--dev" in changed and "alarm" in changed["c-svc-003--dev"]
    assert len(changed) <= 3  # the cell and the summary, not the whole grid


def test_pipeline_runs_are_drawn_as_their_dag(
    served: tuple[Stack, Client, dict[str, int]], admin: Browser
) -> None:
    _, client, _ = served
    jobs = ["test", "lint", "build", "deploy-first"]
    for kind, details in (
        ("pipeline.started", {"run": "run-1", "jobs": jobs, "commit": "abc1234", "branch": "main"}),
        (
            "pipeline.finished",
            {
                "run": "run-1",
                "result": "failure",
                "duration_seconds": 12.5,
                "jobs": {
                    "test": "success",
                    "lint": "failure",
                    "build": "skipped",
                    "deploy-first": "skipped",
                },
                "durations": {"test": 3.25, "lint": 1.0},
            },
        ),
    ):
        answer = client.post(
            "/api/v1/pipeline-events", json_body={"kind": kind, "details": details}
        )
        assert answer.status_code == 201, answer.text
    page = admin.get("/ui/pipelines").text
    stages = re.findall(r'<li class="stage"><ol>(.*?)</ol></li>', page, re.S)
    names = [re.findall(r'<span class="name">([^<]+)</span>', stage) for stage in stages]
    assert names == [["test", "lint"], ["build"], ["deploy-first"]]
    assert 'class="job result-failure"><span class="name">lint' in page
    assert "3.2 s" in page and "12.5 s" in page and "result-failure" in page


def test_a_service_never_deployed_renders_and_streams(admin: Browser) -> None:
    never = f"svc-{SERVICES:03d}"  # in conveyor.yaml, never released
    page = admin.get(f"/ui/services/{never}/dev")
    assert page.status_code == 200 and "Nothing has been deployed" in page.text
    with admin.client.stream("GET", f"/ui/stream/services/{never}/dev", timeout=20) as stream:
        assert next(_events(stream.iter_lines()))[0] == "ready"


@pytest.mark.parametrize(
    ("asked_by", "expires", "explained"),
    [
        ("admin@test", 3600.0, "requires someone else's approval"),
        ("someone-else", 0.2, "This request has expired"),
    ],
)
def test_the_approval_page_explains_why_a_vote_would_not_count(
    served: tuple[Stack, Client, dict[str, int]],
    admin: Browser,
    asked_by: str,
    expires: float,
    explained: str,
) -> None:
    """Self-approval and expiry are explained on the page, not only refused on submit."""
    stack, _, _ = served
    latest = stack.store.releases("svc-011", "staging", 1)[0]
    plan = dataclasses.replace(latest.plan, approval=ApprovalRule(expires=expires))
    waiting = stack.store.create_release(
        NewRelease(plan, RolloutStatus(phase=Phase.PENDING_APPROVAL, message="waiting")),
        actor=asked_by,
    )
    time.sleep(0.3)
    page = admin.get(f"/ui/approvals/{waiting.id}").text
    assert explained in page
    assert 'value="approve"' not in page


def test_a_stream_opened_after_the_ledger_moved_sends_what_the_page_missed(
    served: tuple[Stack, Client, dict[str, int]], admin: Browser
) -> None:
    stack, _, _ = served
    found = re.search(r'data-stream="([^"]+)"', admin.get("/ui/").text)
    assert found is not None and "since=" in found.group(1)
    release = stack.store.releases("svc-004", "dev", 1)[0]
    stack.store.update_release(
        release.id,
        status=release.status.evolve(phase=Phase.ROLLING_BACK, message="test"),
        expected_version=release.status_version,
        actor="test",
        events=[NewEvent("rollout.aborted", {"reason": "test"})],
    )
    url = found.group(1).replace("&amp;", "&")
    with admin.client.stream("GET", url, timeout=20) as stream:
        event, data = next(_events(stream.iter_lines()))
        assert event == "cells"
        changed = json.loads(data)
        assert "alarm" in changed["c-svc-004--dev"]
        assert len(changed) > 3  # everything, once: the page may have missed more


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1, made here (no tool, no network)."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def test_over_tls_the_session_cookie_is_secure(tmp_path: Path) -> None:
    (tmp_path / "conveyor.yaml").write_text(config_text(1))
    stack = build_stack(tmp_path / "conveyor.yaml", database_url=f"sqlite:///{tmp_path / 's.db'}")
    stack.app.tokens.bootstrap(stack.layout.admin_token, "admin@test")
    cert, key = _self_signed(tmp_path)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(stack.app, project_name="tls"),
            log_level="critical",
            lifespan="off",
            ssl_certfile=str(cert),
            ssl_keyfile=str(key),
        )
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        trusted = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=trusted) as client:
            form = client.get("/ui/login")
            assert "Secure" in form.headers["set-cookie"]
            nonce = re.search(r'name="csrf" value="([^"]+)"', form.text)
            assert nonce is not None
            token = stack.layout.admin_token.read_text().strip()
            signed = client.post("/ui/login", data={"csrf": nonce.group(1), "token": token})
            assert signed.status_code == 303
            session = next(
                c
                for c in signed.headers.get_list("set-cookie")
                if c.startswith("conveyor_session=")
            )
            assert "Secure" in session and "HttpOnly" in session and "SameSite=Strict" in session
            assert client.get("/ui/").status_code == 200
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
        stack.store.close()
