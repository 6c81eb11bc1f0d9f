"""Closed by default, against a real server: every route has a rule, every call a token.

The table ``RULES`` is the contract: a route added without a rule fails
``test_every_route_has_an_explicit_rule``, and a route whose rule changes fails the table,
so opening a door is always a deliberate, reviewed change.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor.application import Caller
from conveyor.server.api import (
    ADMIN,
    APPROVE,
    DEPLOY,
    PUBLIC,
    PUBLISH,
    READ,
    create_app,
    routes_without_rules,
)
from conveyor.server.stack import Stack

from .support import Client, serve

CONFIG = """\
project: closed
services:
  web:
    build: {run: "true", outputs: [app]}
    run: "true"
environments:
  staging:
  production:
"""

RULES = {
    ("GET", "/api/v1/health"): PUBLIC,
    ("GET", "/api/v1/whoami"): READ,
    ("GET", "/api/v1/status"): READ,
    ("POST", "/api/v1/releases"): DEPLOY,
    ("GET", "/api/v1/releases/{release_id:int}"): READ,
    ("GET", "/api/v1/history"): READ,
    ("POST", "/api/v1/rollback"): DEPLOY,
    ("POST", "/api/v1/control"): DEPLOY,
    ("GET", "/api/v1/windows"): READ,
    ("GET", "/api/v1/events"): READ,
    ("GET", "/api/v1/ledger/verify"): READ,
    ("POST", "/api/v1/pipeline-events"): PUBLISH,
    ("PUT", "/api/v1/blobs/{digest}"): PUBLISH,
    ("POST", "/api/v1/artifacts"): PUBLISH,
    ("GET", "/api/v1/artifacts"): READ,
    ("GET", "/api/v1/artifacts/{ref}"): READ,
    ("POST", "/api/v1/attestations"): PUBLISH,
    ("GET", "/api/v1/evidence"): READ,
    ("GET", "/api/v1/keys"): READ,
    ("GET", "/api/v1/leases"): READ,
    ("POST", "/api/v1/keys/rotate"): ADMIN,
    ("GET", "/api/v1/tokens"): ADMIN,
    ("POST", "/api/v1/tokens"): ADMIN,
    ("POST", "/api/v1/tokens/{token}/revoke"): ADMIN,
    ("GET", "/api/v1/logs"): READ,
    ("GET", "/api/v1/approvals"): READ,
    ("GET", "/api/v1/approvals/{release_id:int}"): READ,
    ("POST", "/api/v1/approvals/{release_id:int}"): APPROVE,
    ("POST", "/api/v1/reviews/{release_id:int}"): APPROVE,
    ("GET", "/api/v1/access"): READ,
    ("POST", "/api/v1/access/apply"): ADMIN,
    ("GET", "/api/v1/audit"): READ,
    ("GET", "/api/v1/migrations"): READ,
    ("POST", "/api/v1/migrations/undo"): ADMIN,
    ("GET", "/api/v1/dora"): READ,
    ("GET", "/api/v1/incidents"): READ,
    ("POST", "/api/v1/incidents"): DEPLOY,
    ("POST", "/api/v1/incidents/{incident_id:int}/resolve"): DEPLOY,
    ("POST", "/api/v1/alertmanager"): DEPLOY,
    ("GET", "/api/v1/slos"): READ,
    ("GET", "/api/v1/flags"): READ,
    ("GET", "/api/v1/flags/drift"): READ,
    ("GET", "/api/v1/flags/{key}"): READ,
    ("GET", "/api/v1/flags/{key}/history"): READ,
    ("POST", "/api/v1/flags/{key}/state"): DEPLOY,
    ("POST", "/api/v1/flags/{key}/kill"): DEPLOY,
    ("POST", "/api/v1/flags/{key}/reset"): DEPLOY,
    ("POST", "/api/v1/flags/{key}/rollout"): DEPLOY,
    ("POST", "/api/v1/flags/{key}/rules"): DEPLOY,
    ("POST", "/api/v1/flags/{key}/guarded"): DEPLOY,
    ("POST", "/api/v1/flags/outcomes"): PUBLISH,
    ("GET", "/api/v1/flag-rollouts"): READ,
    ("GET", "/api/v1/flagsets/{env}"): READ,
    ("GET", "/api/v1/flagsets/{env}/stream"): READ,
    ("GET", "/metrics"): READ,
    # The dashboard (docs/dashboard.md): a session cookie instead of a bearer token.
    ("GET", "/"): PUBLIC,
    ("GET", "/ui/login"): PUBLIC,
    ("POST", "/ui/login"): PUBLIC,
    ("POST", "/ui/logout"): READ,
    ("GET", "/ui/static/{path:path}"): PUBLIC,
    ("POST", "/ui/services/{service}/{env}/control"): DEPLOY,
    ("POST", "/ui/approvals/{release_id:int}"): APPROVE,
    ("POST", "/ui/flags/{key}/state"): DEPLOY,
    ("POST", "/ui/flags/{key}/kill"): DEPLOY,
    ("GET", "/ui/audit"): READ,
    ("POST", "/ui/incidents/{incident_id:int}/resolve"): DEPLOY,
    **{
        ("GET", f"/ui{stream}{path}"): READ
        for stream in ("", "/stream")
        for path in (
            "/",
            "/services/{service}/{env}",
            "/releases/{release_id:int}",
            "/approvals",
            "/approvals/{release_id:int}",
            "/flags",
            "/flags/{key}",
            "/ledger",
            "/pipelines",
            "/insight",
        )
    },
}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Client]]:
    with serve(tmp_path_factory.mktemp("closed"), CONFIG) as both:
        yield both


def _token(client: Client, name: str, role: str, envs: list[str] | None = None) -> str:
    body = {"name": name, "role": role, "environments": envs or ["*"]}
    answer = client.post("/api/v1/tokens", json_body=body)
    assert answer.status_code == 201, answer.text
    return str(answer.json()["secret"])


def test_every_route_has_an_explicit_rule(served: tuple[Stack, Client]) -> None:
    stack, _ = served
    api = create_app(stack.app, project_name="closed")
    assert routes_without_rules(api) == []
    found = {
        (method, route.path): route.endpoint.rule  # type: ignore[attr-defined]
        for route in api.routes
        for method in sorted(getattr(route, "methods", None) or ())
        if method != "HEAD"
    }
    assert found == RULES


def _sample(path: str) -> str:
    return (
        path.replace("{release_id:int}", "1")
        .replace("{digest}", "sha256:" + "0" * 64)
        .replace("{ref}", "abcdef1")
        .replace("{token}", "tok_x")
        .replace("{incident_id:int}", "1")
        .replace("{key}", "some-flag")
        .replace("{env}", "staging")
    )


@pytest.mark.parametrize(
    ("method", "path"),
    [k for k, rule in RULES.items() if rule is not PUBLIC and not k[1].startswith("/ui")],
)
@pytest.mark.parametrize(
    "token", [None, "garbage", "cvy_" + "A" * 43], ids=["none", "bad", "unknown"]
)
def test_no_valid_token_no_answer(
    served: tuple[Stack, Client], method: str, path: str, token: str | None
) -> None:
    _, admin = served
    answer = admin.as_(token).request(method, _sample(path), json_body={})
    assert answer.status_code == 401, answer.text
    assert answer.json()["error"] == "Unauthenticated"


@pytest.mark.parametrize(
    ("method", "path"),
    [k for k, rule in RULES.items() if rule is not PUBLIC and k[1].startswith("/ui")],
)
def test_no_session_no_page(served: tuple[Stack, Client], method: str, path: str) -> None:
    """Dashboard routes take a session cookie: a bearer token or a made-up session gets a
    redirect to the sign-in form (pages) or 401 (forms and streams), never the page."""
    _, admin = served
    sample = _sample(path).replace("{service}", "web").replace("{env}", "staging")
    for headers in ({}, {"cookie": "conveyor_session=" + "x" * 43}):
        answer = admin.request(method, sample, headers=headers)
        page = method == "GET" and not path.startswith("/ui/stream")
        assert answer.status_code == (303 if page else 401), (sample, answer.text)


def test_health_needs_no_token(served: tuple[Stack, Client]) -> None:
    _, admin = served
    assert admin.as_(None).get("/api/v1/health").status_code == 200


def test_roles_and_environments(served: tuple[Stack, Client]) -> None:
    _, admin = served
    viewer = admin.as_(_token(admin, "vera", "viewer"))
    assert viewer.get("/api/v1/status").status_code == 200
    body = {"service": "web", "env": "staging", "artifact": "abcdef1"}
    refused = viewer.post("/api/v1/releases", json_body=body)
    assert refused.status_code == 403 and refused.json()["error"] == "Forbidden"
    assert viewer.get("/api/v1/tokens").status_code == 403

    ci = admin.as_(_token(admin, "ci-shop", "deployer", ["staging"]))
    who = ci.get("/api/v1/whoami").json()
    assert who == {
        "identity": "ci-shop",
        "role": "deployer",
        "environments": ["staging"],
        "token": who["token"],
    }
    # In its environment the deployer gets past authorization (the artifact is unknown).
    assert ci.post("/api/v1/releases", json_body=body).status_code == 404
    elsewhere = ci.post("/api/v1/releases", json_body={**body, "env": "production"})
    assert elsewhere.status_code == 403
    assert "may not deploy to production" in elsewhere.json()["message"]
    assert ci.post("/api/v1/keys/rotate", json_body={}).status_code == 403


def test_the_actor_is_the_token_not_the_claim(served: tuple[Stack, Client]) -> None:
    _, admin = served
    ci = admin.as_(_token(admin, "ci-billing", "deployer"))
    answer = ci.request(
        "POST",
        "/api/v1/pipeline-events",
        json_body={"kind": "pipeline.started", "details": {"run": "r1"}},
        headers={"x-conveyor-actor": "mallory"},
    )
    assert answer.status_code == 201
    assert answer.json()["actor"] == "ci-billing"


def test_revoked_and_expired_tokens_stop_working(served: tuple[Stack, Client]) -> None:
    stack, admin = served
    secret = _token(admin, "temp", "viewer")
    user = admin.as_(secret)
    assert user.get("/api/v1/status").status_code == 200
    token_id = user.get("/api/v1/whoami").json()["token"]
    assert admin.post(f"/api/v1/tokens/{token_id}/revoke", json_body={}).status_code == 200
    gone = user.get("/api/v1/status")
    assert gone.status_code == 401 and "revoked" in gone.json()["message"]

    brief = admin.post(
        "/api/v1/tokens", json_body={"name": "brief", "role": "viewer", "expires_in": 0.001}
    ).json()["secret"]
    assert admin.as_(brief).get("/api/v1/status").status_code == 401
    listed = {t["identity"] for t in admin.get("/api/v1/tokens").json()["tokens"]}
    assert {"admin@test", "temp", "brief"} <= listed
    kinds = [e.kind for e in stack.store.events() if e.kind.startswith("token.")]
    assert "token.created" in kinds and "token.revoked" in kinds
    secrets_on_ledger = [e for e in stack.store.events() if secret in str(e.details)]
    assert secrets_on_ledger == []


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"host": "evil.example"}, 403),
        ({"origin": "http://evil.example"}, 403),
        ({"origin": "null"}, 403),
        ({}, 200),
    ],
    ids=["rebound-host", "cross-site", "opaque-origin", "own"],
)
def test_host_and_origin(
    served: tuple[Stack, Client], headers: dict[str, str], status: int
) -> None:
    _, admin = served
    assert admin.request("GET", "/api/v1/status", headers=headers).status_code == status


def test_own_origin_is_allowed(served: tuple[Stack, Client]) -> None:
    _, admin = served
    own = {"origin": f"http://127.0.0.1:{admin.port}"}
    assert admin.request("GET", "/api/v1/status", headers=own).status_code == 200


def test_metrics_need_a_viewer_unless_public(tmp_path: Path) -> None:
    with serve(tmp_path / "private", CONFIG) as (_, admin):
        assert admin.as_(None).get("/metrics").status_code == 401
        assert admin.get("/metrics").status_code == 200
    with serve(tmp_path / "public", CONFIG, public_metrics=True) as (_, admin):
        assert admin.as_(None).get("/metrics").status_code == 200


def test_bootstrap_keeps_a_good_token_and_replaces_a_revoked_one(tmp_path: Path) -> None:
    with serve(tmp_path, CONFIG) as (stack, admin):
        path = stack.layout.admin_token
        assert path.stat().st_mode & 0o777 == 0o600
        first = path.read_text()
        stack.app.tokens.bootstrap(path, "admin@test")
        assert path.read_text() == first
        token_id = admin.get("/api/v1/whoami").json()["token"]
        stack.app.tokens.revoke(Caller.system(), token_id)
        stack.app.tokens.bootstrap(path, "admin@test")
        assert path.read_text() != first
        assert admin.as_(path.read_text().strip()).get("/api/v1/status").status_code == 200
