"""The HTTP API: JSON over Starlette, the only door to the application layer from outside.

Handlers are thin: read and check the request (types, sizes, ranges), call the
``Application`` with the caller, serialise. The contract is docs/api.md.

Errors: a ``ConveyorError`` becomes its HTTP status with a JSON body naming the class, its
ancestors, the message, the hint and the exit code, so the CLI raises the same error the
server did. Anything else is a bug: 500, a short message, and the traceback in the log —
never a user's bad input (those are ``UsageError``s, 4xx).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import iterate_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from conveyor import __version__
from conveyor.application import Application, Caller
from conveyor.application.access import Permission, authorize
from conveyor.application.artifacts import MAX_BLOB
from conveyor.application.caller import Role
from conveyor.application.queries import release_json
from conveyor.artifacts.signing import KeyInfo, TrustedKey
from conveyor.errors import ConveyorError, Refused, UsageError
from conveyor.server.dashboard.routes import Dashboard
from conveyor.server.guard import LOCAL_HOSTS, HostGuard
from conveyor.server.rules import ADMIN, APPROVE, DEPLOY, PUBLIC, PUBLISH, READ, Rule, with_rule
from conveyor.store.insight_repo import NewIncident
from conveyor.store.records import ArtifactRecord, EventRecord, TokenRecord

API = "/api/v1"
MAX_BODY = 1024 * 1024
"""JSON bodies larger than this are refused with 413 (blobs have their own limit)."""

log = logging.getLogger("conveyor.server")

Handler = Callable[[Request], Awaitable[Response]]


def create_app(
    app: Application,
    *,
    project_name: str,
    blob_limit: int = MAX_BLOB,
    public_metrics: bool = False,
    allowed_hosts: Iterable[str] = LOCAL_HOSTS,
) -> Starlette:
    """The API for ``app``; every route has a ``Rule`` (``routes_without_rules`` checks)."""

    async def health(request: Request, caller: Caller) -> Response:
        return JSONResponse(
            {"ok": True, "pid": os.getpid(), "project": project_name, "version": __version__}
        )

    async def status(request: Request, caller: Caller) -> Response:
        env = _optional(request, "env")
        rows = app.status(caller, env)
        return JSONResponse(
            {
                "services": [row.to_json() for row in rows],
                "config": app.config_state(caller).to_json(),
            }
        )

    async def create_release(request: Request, caller: Caller) -> Response:
        body = await _json(request)
        emergency = body.get("emergency")
        if emergency is not None and (not isinstance(emergency, str) or len(emergency) > 2000):
            raise UsageError("'emergency' is the reason (text, at most 2000 characters)")
        fix = body.get("fix")
        if fix is not None and (not isinstance(fix, str) or len(fix) > 2000):
            raise UsageError("'fix' says what the release repairs (text, at most 2000 characters)")
        release = await app.deploy(
            caller,
            _field(body, "service"),
            _field(body, "env"),
            _field(body, "artifact"),
            _assignments(body.get("set")),
            emergency=emergency,
            fix=fix,
        )
        return JSONResponse(release_json(release), status_code=201)

    async def get_release(request: Request, caller: Caller) -> Response:
        release = app.release(caller, int(request.path_params["release_id"]))
        return JSONResponse(release_json(release))

    async def history(request: Request, caller: Caller) -> Response:
        releases = app.history(
            caller,
            _required(request, "service"),
            _required(request, "env"),
            _int(request, "limit", 50, 1, 1000) or 50,
        )
        return JSONResponse({"releases": [release_json(r) for r in releases]})

    async def rollback(request: Request, caller: Caller) -> Response:
        body = await _json(request)
        to = body.get("to")
        if to is not None and (not isinstance(to, int) or isinstance(to, bool) or to < 1):
            raise UsageError("'to' must be a revision number (1 or more) or null")
        release = await app.rollback(caller, _field(body, "service"), _field(body, "env"), to)
        return JSONResponse(release_json(release), status_code=201)

    async def control(request: Request, caller: Caller) -> Response:
        body = await _json(request)
        release = await app.control(
            caller, _field(body, "service"), _field(body, "env"), _field(body, "action")
        )
        return JSONResponse(release_json(release))

    async def windows(request: Request, caller: Caller) -> Response:
        rows, declared = app.windows(
            caller, _optional(request, "env"), _optional(request, "service")
        )
        return JSONResponse({"rows": [row.to_json() for row in rows], "windows": declared})

    async def events(request: Request, caller: Caller) -> Response:
        rows = app.events(
            caller,
            release_id=_int(request, "release", None, 1, 2**31),
            service=_optional(request, "service"),
            env=_optional(request, "env"),
            after=_int(request, "after", 0, 0, 2**62) or 0,
            limit=_int(request, "limit", 1000, 1, 5000) or 1000,
        )
        return JSONResponse({"events": [event_json(e) for e in rows]})

    async def verify_ledger(request: Request, caller: Caller) -> Response:
        report = await app.verify_ledger(caller, _flag(request, "full"))
        return JSONResponse(report.to_json())

    async def pipeline_event(request: Request, caller: Caller) -> Response:
        body = await _json(request)
        details = body.get("details") or {}
        if not isinstance(details, dict):
            raise UsageError("'details' must be a JSON object")
        service = body.get("service")
        if service is not None and not isinstance(service, str):
            raise UsageError("'service' must be text or null")
        event = app.pipeline_event(caller, _field(body, "kind"), details, service)
        return JSONResponse(event_json(event), status_code=201)

    async def put_blob(request: Request, caller: Caller) -> Response:
        if (
            request.headers.get("content-type", "").split(";")[0].strip()
            != "application/octet-stream"
        ):
            raise UsageError("a blob is sent as Content-Type: application/octet-stream")
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > blob_limit:
            raise _TooLarge(f"the blob is larger than {blob_limit} bytes")
        received = await app.receive_blob(
            caller, request.path_params["digest"], _stream(request), limit=blob_limit
        )
        body = {"digest": received.digest, "size": received.size, "stored": received.stored}
        return JSONResponse(body, status_code=201 if received.stored else 200)

    async def record_artifact(request: Request, caller: Caller) -> Response:
        body = await _json(request)
        build = body.get("build")
        if not isinstance(build, dict):
            raise UsageError("'build' must be a JSON object (BuildFacts)")
        recorded = app.record_artifact(
            caller, _field(body, "service"), _field(body, "digest"), build
        )
        return JSONResponse(
            {"artifact": artifact_json(recorded.artifact), "reused": recorded.reused},
            status_code=201,
        )

    async def list_artifacts(request: Request, caller: Caller) -> Response:
        found = app.list_artifacts(
            caller, _optional(request, "service"), _int(request, "limit", 50, 1, 1000) or 50
        )
        return JSONResponse({"artifacts": [artifact_json(a) for a in found]})

    async def get_artifact(request: Request, caller: Caller) -> Response:
        return JSONResponse(artifact_json(app.artifact(caller, request.path_params["ref"])))

    async def attest(request: Request, caller: Caller) -> Response:
        body = await _json(request)
        run = body.get("run")
        if not isinstance(run, dict):
            raise UsageError("'run' must be a JSON object (RunFacts)")
        signed = app.attest(caller, _field(body, "service"), _field(body, "digest"), run)
        return JSONResponse(signed, status_code=201)

    async def evidence(request: Request, caller: Caller) -> Response:
        return JSONResponse(app.evidence(caller, _required(request, "release")))

    async def leases(request: Request, caller: Caller) -> Response:
        return JSONResponse(await asyncio.to_thread(app.leases, caller))

    async def keys(request: Request, caller: Caller) -> Response:
        current, trusted = app.keys(caller)
        return JSONResponse(keys_json(current, trusted, retired=app.keyring.pinned()))

    async def rotate_keys(request: Request, caller: Caller) -> Response:
        await _json(request)
        current, previous = app.rotate_keys(caller)
        _, trusted = app.keys(caller)
        return JSONResponse(keys_json(current, trusted, previous, app.keyring.pinned()))

    async def logs(request: Request, caller: Caller) -> Response:
        service, env = _required(request, "service"), _required(request, "env")
        lines = _int(request, "lines", 50, 1, 10_000) or 50
        return JSONResponse(
            {"service": service, "env": env, "instances": app.logs(caller, service, env, lines)}
        )

    async def metrics(request: Request, caller: Caller) -> Response:
        text = app.metrics(caller if not public_metrics else Caller.system())
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    async def dora(request: Request, caller: Caller) -> Response:
        now = time.time()
        until = _number(request, "until", now)
        since = _number(request, "since", until - 90 * 86400)
        report = await asyncio.to_thread(
            app.dora,
            caller,
            since=since,
            until=until,
            env=_optional(request, "env") or "production",
            service=_optional(request, "service"),
        )
        return JSONResponse(report.to_json())

    async def incidents(request: Request, caller: Caller) -> Response:
        found = app.incidents(
            caller,
            open_only=not _flag(request, "all"),
            service=_optional(request, "service"),
            env=_optional(request, "env"),
            limit=_int(request, "limit", 100, 1, 1000) or 100,
        )
        return JSONResponse({"incidents": [i.to_json() for i in found]})

    async def open_incident(request: Request, caller: Caller) -> Response:
        body = await _json(request)
        severity = body.get("severity")
        service, env = body.get("service"), body.get("env")
        for name, value in (("severity", severity), ("service", service), ("env", env)):
            if value is not None and (not isinstance(value, str) or not 0 < len(value) <= 200):
                raise UsageError(f"'{name}' must be text of at most 200 characters, or null")
        incident = app.open_incident(
            caller,
            NewIncident(
                title=_field(body, "title")[:2000],
                source="manual",
                service=service,
                env=env,
                severity=severity,
            ),
        )
        return JSONResponse(incident.to_json(), status_code=201)

    async def resolve_incident(request: Request, caller: Caller) -> Response:
        body = await _json(request)
        note = body.get("note") or ""
        if not isinstance(note, str) or len(note) > 2000:
            raise UsageError("'note' must be text of at most 2000 characters")
        incident = app.resolve_incident(caller, int(request.path_params["incident_id"]), note)
        return JSONResponse(incident.to_json())

    async def alertmanager(request: Request, caller: Caller) -> Response:
        result = app.alertmanager(caller, await _json(request))
        return JSONResponse(result.to_json())

    async def slos(request: Request, caller: Caller) -> Response:
        states = app.slo_status(caller, _optional(request, "service"), _optional(request, "env"))
        return JSONResponse({"slos": [s.to_json() for s in states]})

    async def conveyor_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ConveyorError)
        return JSONResponse(exc.to_dict(), status_code=exc.http_status)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        detail = exc.detail if len(str(exc.detail)) < 200 else f"HTTP {exc.status_code}"
        return JSONResponse(
            {
                "error": "HTTPError",
                "kinds": ["HTTPError"],
                "message": detail,
                "hint": None,
                "exit_code": 1,
            },
            status_code=exc.status_code,
        )

    async def internal_error(request: Request, exc: Exception) -> Response:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        if request.url.path.startswith("/ui"):
            return dashboard.internal_error(request)
        return JSONResponse(
            {
                "error": "InternalError",
                "kinds": ["InternalError"],
                "message": f"the server failed on {request.method} {request.url.path}: "
                f"{type(exc).__name__} (a bug in Conveyor; the server log has the details)",
                "hint": "please report it with the server log (.conveyor/server.log)",
                "exit_code": 1,
            },
            status_code=500,
        )

    async def create_token(request: Request, caller: Caller) -> Response:
        body = await _json(request)
        envs = body.get("environments") or ["*"]
        if not isinstance(envs, list) or not all(isinstance(e, str) for e in envs):
            raise UsageError("'environments' must be a list of environment names")
        expires = body.get("expires_in")
        if expires is not None and (
            not isinstance(expires, int | float) or isinstance(expires, bool)
        ):
            raise UsageError("'expires_in' must be a number of seconds or null")
        secret, record = app.tokens.issue(
            caller, _field(body, "name"), _field(body, "role"), envs, expires
        )
        return JSONResponse({**token_json(record), "secret": secret}, status_code=201)

    async def list_tokens(request: Request, caller: Caller) -> Response:
        return JSONResponse({"tokens": [token_json(t) for t in app.tokens.list(caller)]})

    async def revoke_token(request: Request, caller: Caller) -> Response:
        await _json(request)
        return JSONResponse(token_json(app.tokens.revoke(caller, request.path_params["token"])))

    async def whoami(request: Request, caller: Caller) -> Response:
        return JSONResponse(
            {
                "identity": caller.actor,
                "role": caller.role.name.lower(),
                "environments": sorted(caller.environments)
                if caller.environments is not None
                else ["*"],
                "token": caller.token,
            }
        )

    async def approvals(request: Request, caller: Caller) -> Response:
        waiting = app.pending_approvals(caller)
        return JSONResponse(
            {"approvals": [{"release": release_json(r), "approval": s} for r, s in waiting]}
        )

    async def approval(request: Request, caller: Caller) -> Response:
        return JSONResponse(app.approval_page(caller, int(request.path_params["release_id"])))

    async def vote(request: Request, caller: Caller) -> Response:
        body = await _json(request)
        decision = _field(body, "decision")
        if decision not in ("approve", "reject"):
            raise UsageError("'decision' is approve or reject")
        comment = body.get("comment") or ""
        content, page = body.get("content"), body.get("page")
        for name, value in (("comment", comment), ("content", content), ("page", page)):
            if value is not None and not isinstance(value, str):
                raise UsageError(f"'{name}' must be text")
        release = await app.vote(
            caller,
            int(request.path_params["release_id"]),
            approve=decision == "approve",
            comment=comment,
            content=content,
            page_hash=page,
        )
        return JSONResponse(release_json(release))

    async def review(request: Request, caller: Caller) -> Response:
        body = await _json(request)
        comment = body.get("comment")
        if not isinstance(comment, str):
            raise UsageError("'comment' says what was checked (text)")
        release = app.review(caller, int(request.path_params["release_id"]), comment)
        return JSONResponse(release_json(release))

    async def access(request: Request, caller: Caller) -> Response:
        return JSONResponse(app.access(caller))

    async def apply_access(request: Request, caller: Caller) -> Response:
        await _json(request)
        return JSONResponse(app.apply_access(caller))

    async def audit(request: Request, caller: Caller) -> Response:
        now = time.time()
        since = _number(request, "since", now - 90 * 86400)
        until = _number(request, "until", now + 1)
        fmt = _optional(request, "format") or "jsonl"
        chunks = await app.audit(caller, since=since, until=until, fmt=fmt)
        kind = "text/csv" if fmt == "csv" else "application/x-ndjson"
        return StreamingResponse(iterate_in_threadpool(chunks), media_type=kind)

    async def migration_status(request: Request, caller: Caller) -> Response:
        return JSONResponse(
            app.migration_status(caller, _required(request, "service"), _required(request, "env"))
        )

    async def undo_migration(request: Request, caller: Caller) -> Response:
        body = await _json(request)
        done = await app.undo_migration(
            caller,
            _field(body, "service"),
            _field(body, "env"),
            _field(body, "migration"),
            _field(body, "reason"),
        )
        return JSONResponse(done, status_code=201 if done["ok"] else 200)

    from conveyor.server.flags_api import flag_table  # it builds on this module's helpers

    flag_routes = flag_table(app)
    metrics_rule = PUBLIC if public_metrics else Rule(Permission.READ)
    table: list[tuple[str, list[str], AuthedHandler, Rule]] = [
        (f"{API}/health", ["GET"], health, PUBLIC),
        (f"{API}/whoami", ["GET"], whoami, READ),
        (f"{API}/status", ["GET"], status, READ),
        (f"{API}/releases", ["POST"], create_release, DEPLOY),
        (f"{API}/releases/{{release_id:int}}", ["GET"], get_release, READ),
        (f"{API}/history", ["GET"], history, READ),
        (f"{API}/rollback", ["POST"], rollback, DEPLOY),
        (f"{API}/control", ["POST"], control, DEPLOY),
        (f"{API}/windows", ["GET"], windows, READ),
        (f"{API}/events", ["GET"], events, READ),
        (f"{API}/ledger/verify", ["GET"], verify_ledger, READ),
        (f"{API}/pipeline-events", ["POST"], pipeline_event, PUBLISH),
        (f"{API}/blobs/{{digest}}", ["PUT"], put_blob, PUBLISH),
        (f"{API}/artifacts", ["POST"], record_artifact, PUBLISH),
        (f"{API}/artifacts", ["GET"], list_artifacts, READ),
        (f"{API}/artifacts/{{ref}}", ["GET"], get_artifact, READ),
        (f"{API}/attestations", ["POST"], attest, PUBLISH),
        (f"{API}/evidence", ["GET"], evidence, READ),
        (f"{API}/keys", ["GET"], keys, READ),
        (f"{API}/leases", ["GET"], leases, READ),
        (f"{API}/keys/rotate", ["POST"], rotate_keys, ADMIN),
        (f"{API}/tokens", ["GET"], list_tokens, ADMIN),
        (f"{API}/tokens", ["POST"], create_token, ADMIN),
        (f"{API}/tokens/{{token}}/revoke", ["POST"], revoke_token, ADMIN),
        (f"{API}/logs", ["GET"], logs, READ),
        (f"{API}/approvals", ["GET"], approvals, READ),
        (f"{API}/approvals/{{release_id:int}}", ["GET"], approval, READ),
        (f"{API}/approvals/{{release_id:int}}", ["POST"], vote, APPROVE),
        (f"{API}/reviews/{{release_id:int}}", ["POST"], review, APPROVE),
        (f"{API}/access", ["GET"], access, READ),
        (f"{API}/access/apply", ["POST"], apply_access, ADMIN),
        (f"{API}/audit", ["GET"], audit, READ),
        (f"{API}/migrations", ["GET"], migration_status, READ),
        (f"{API}/migrations/undo", ["POST"], undo_migration, ADMIN),
        (f"{API}/dora", ["GET"], dora, READ),
        (f"{API}/incidents", ["GET"], incidents, READ),
        (f"{API}/incidents", ["POST"], open_incident, DEPLOY),
        (f"{API}/incidents/{{incident_id:int}}/resolve", ["POST"], resolve_incident, DEPLOY),
        (f"{API}/alertmanager", ["POST"], alertmanager, DEPLOY),
        (f"{API}/slos", ["GET"], slos, READ),
        *flag_routes,
        ("/metrics", ["GET"], metrics, metrics_rule),
    ]
    routes = [
        Route(path, guarded(rule, handler, app), methods=methods)
        for path, methods, handler, rule in table
    ]
    dashboard = Dashboard(app, project_name=project_name)
    routes.extend(dashboard.routes())
    api = Starlette(
        routes=routes,
        middleware=[Middleware(HostGuard, hosts=frozenset(allowed_hosts))],
        exception_handlers={
            ConveyorError: conveyor_error,
            HTTPException: http_error,
            Exception: internal_error,
        },
    )
    api.state.dashboard = dashboard
    return api


# --- who may call what ------------------------------------------------------------------


AuthedHandler = Callable[[Request, Caller], Awaitable[Response]]


def guarded(rule: Rule, handler: AuthedHandler, app: Application) -> Handler:
    """The route's endpoint: the caller from the bearer token, its role checked, then the
    handler. The rule stays on the endpoint, for the test that every route has one."""

    async def endpoint(request: Request) -> Response:
        if rule.permission is None:
            caller = Caller("anonymous", Role.VIEWER)
        else:
            caller = app.tokens.authenticate(_bearer(request))
            authorize(caller, rule.permission, None, app.policy.current())
        return await handler(request, caller)

    return with_rule(endpoint, rule, handler.__name__)


def routes_without_rules(api: Starlette) -> list[str]:
    """Paths whose endpoint has no explicit ``Rule`` (must be empty; a test says so)."""
    return [
        route.path
        for route in api.routes
        if isinstance(route, Route) and not isinstance(getattr(route.endpoint, "rule", None), Rule)
    ]


def _bearer(request: Request) -> str | None:
    value = request.headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


# --- serialising -------------------------------------------------------------------------


def token_json(token: TokenRecord) -> dict[str, Any]:
    return {
        "id": token.id,
        "identity": token.identity,
        "role": token.role,
        "environments": list(token.environments),
        "created_at": token.created_at,
        "created_by": token.created_by,
        "expires_at": token.expires_at,
        "revoked_at": token.revoked_at,
        "last_used_at": token.last_used_at,
    }


def event_json(event: EventRecord) -> dict[str, Any]:
    return {
        "seq": event.seq,
        "at": event.at,
        "at_iso": dt.datetime.fromtimestamp(event.at, dt.UTC).isoformat(timespec="milliseconds"),
        "actor": event.actor,
        "kind": event.kind,
        "service": event.service,
        "env": event.env,
        "release_id": event.release_id,
        "details": dict(event.details),
        "prev_hash": event.prev_hash,
        "hash": event.hash,
    }


def artifact_json(artifact: ArtifactRecord) -> dict[str, Any]:
    return {
        "digest": artifact.digest,
        "short": artifact.short,
        "service": artifact.service,
        "services": list(artifact.services),
        "commit": artifact.commit,
        "branch": artifact.branch,
        "dirty": artifact.dirty,
        "created_at": artifact.created_at,
        "size": artifact.size,
        "files": artifact.files,
        "build_command": artifact.build_command,
        "outputs": list(artifact.outputs),
        "metadata": dict(artifact.metadata),
    }


def keys_json(
    current: KeyInfo,
    trusted: list[KeyInfo],
    previous: KeyInfo | None = None,
    retired: Sequence[TrustedKey] = (),
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "algorithm": "ed25519",
        "key": current.fingerprint,
        "public_key": current.public_pem,
        "trusted": sorted(k.fingerprint for k in trusted),
        "retired": [
            {"key": k.fingerprint, "retired_at": k.retired_at}
            for k in retired
            if k.retired_at is not None
        ],
    }
    if previous is not None:
        out["previous"] = previous.fingerprint
    return out


# --- reading requests --------------------------------------------------------------------


class _TooLarge(Refused):
    http_status = 413


class _NotJson(UsageError):
    http_status = 415


async def _stream(request: Request) -> AsyncIterator[bytes]:
    async for chunk in request.stream():
        if chunk:
            yield chunk


async def _json(request: Request) -> dict[str, Any]:
    """The body as a JSON object: declared as JSON, at most ``MAX_BODY`` bytes."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise _NotJson(
            "the request body must be JSON sent with Content-Type: application/json",
            hint="clients of this API send JSON; a browser form cannot call it",
        )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY:
        raise _TooLarge(f"the request body is larger than {MAX_BODY} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > MAX_BODY:
            raise _TooLarge(f"the request body is larger than {MAX_BODY} bytes")
    try:
        data = json.loads(body or b"{}")
    except ValueError:
        raise UsageError("the request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise UsageError("the request body must be a JSON object")
    return data


def _field(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise UsageError(f"missing or empty field {name!r} (text)")
    if len(value) > 4096 or "\x00" in value:
        raise UsageError(f"field {name!r} is too long or holds a NUL character")
    return value


def _assignments(value: object) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > 1000:
        raise UsageError("'set' must be an object of at most 1000 KEY: VALUE pairs")
    out: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(item, str | int | float | bool) or isinstance(item, dict | list):
            raise UsageError(f"'set.{key}' must be text, a number or true/false")
        out[str(key)] = ("true" if item else "false") if isinstance(item, bool) else str(item)
    return out


def _required(request: Request, name: str) -> str:
    value = _optional(request, name)
    if not value:
        raise UsageError(f"missing query parameter {name!r}")
    return value


def _optional(request: Request, name: str) -> str | None:
    value = request.query_params.get(name)
    if value is not None and (len(value) > 4096 or "\x00" in value):
        raise UsageError(f"query parameter {name!r} is too long")
    return value or None


def _number(request: Request, name: str, default: float) -> float:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise UsageError(f"query parameter {name!r} must be a time in Unix seconds") from None
    if not 0 <= value < 2**40:
        raise UsageError(f"query parameter {name!r} is out of range")
    return value


def _int(request: Request, name: str, default: int | None, low: int, high: int) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise UsageError(
            f"query parameter {name!r} must be a whole number, got {raw[:40]!r}"
        ) from None
    if not low <= value <= high:
        raise UsageError(f"query parameter {name!r} must be between {low} and {high}, got {value}")
    return value


def _flag(request: Request, name: str) -> bool:
    """A yes/no query parameter: ``1``/``true`` or ``0``/``false`` (absent: no)."""
    raw = (request.query_params.get(name) or "0").lower()
    if raw not in ("0", "1", "false", "true"):
        raise UsageError(
            f"query parameter {name!r} must be 1 or 0 (true or false), got {raw[:40]!r}"
        )
    return raw in ("1", "true")
