"""The HTTP API: JSON over Starlette, served by `conveyor server` on a loopback port.

Handlers are thin: parse, call the controller or the store, serialise. Every
``ConveyorError`` becomes a JSON body with its message and hint and the error's HTTP status,
so the CLI can show exactly what the server refused and why.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from conveyor.controller.controller import Controller
from conveyor.errors import ConveyorError
from conveyor.store.records import EventRecord, ReleaseRecord

API = "/api/v1"


def release_json(release: ReleaseRecord) -> dict[str, Any]:
    data = dataclasses.asdict(release)
    data["name"] = release.name
    return data


def event_json(event: EventRecord) -> dict[str, Any]:
    return dataclasses.asdict(event)


def create_app(
    controller: Controller, *, project_name: str, metrics_extra: Callable[[], str] | None = None
) -> Starlette:
    store = controller.store

    async def health(request: Request) -> Response:
        return JSONResponse({"ok": True, "pid": os.getpid(), "project": project_name})

    async def status(request: Request) -> Response:
        env = request.query_params.get("env")
        controller.check_names(None, env)
        return JSONResponse({"services": [row.to_json() for row in controller.status(env)]})

    async def create_release(request: Request) -> Response:
        body = await _json(request)
        release = await controller.deploy(
            _field(body, "service"),
            _field(body, "env"),
            _field(body, "artifact"),
            overrides={str(k): str(v) for k, v in (body.get("set") or {}).items()},
            actor=_actor(request),
        )
        return JSONResponse(release_json(release), status_code=201)

    async def get_release(request: Request) -> Response:
        release = store.get_release(int(request.path_params["release_id"]))
        return JSONResponse(release_json(release))

    async def history(request: Request) -> Response:
        service = _query(request, "service")
        env = _query(request, "env")
        controller.check_names(service, env)
        limit = int(request.query_params.get("limit", "50"))
        return JSONResponse(
            {"releases": [release_json(r) for r in store.releases(service, env, limit)]}
        )

    async def rollback(request: Request) -> Response:
        body = await _json(request)
        to = body.get("to")
        release = await controller.rollback(
            _field(body, "service"),
            _field(body, "env"),
            int(to) if to is not None else None,
            actor=_actor(request),
        )
        return JSONResponse(release_json(release), status_code=201)

    async def control(request: Request) -> Response:
        body = await _json(request)
        service, env, action = _field(body, "service"), _field(body, "env"), _field(body, "action")
        actor = _actor(request)
        if action == "abort":
            release = await controller.abort(service, env, actor=actor)
        elif action == "retry":
            release = await controller.retry(service, env, actor=actor)
        elif action in ("promote", "promote_full", "pause", "resume"):
            release = await controller.control(service, env, action, actor=actor)
        else:
            raise ValueError(
                f"unknown action {action!r}: promote, promote_full, pause, resume, abort, retry"
            )
        return JSONResponse(release_json(release))

    async def events(request: Request) -> Response:
        q = request.query_params
        rows = store.events(
            release_id=int(q["release"]) if "release" in q else None,
            service=q.get("service"),
            env=q.get("env"),
            after_seq=int(q.get("after", "0")),
            limit=int(q.get("limit", "1000")),
        )
        return JSONResponse({"events": [event_json(e) for e in rows]})

    async def metrics(request: Request) -> Response:
        text = controller.prometheus_text()
        if metrics_extra is not None:
            text += metrics_extra()
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    async def conveyor_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ConveyorError)
        return JSONResponse(exc.to_dict(), status_code=exc.http_status)

    async def bad_request(request: Request, exc: Exception) -> Response:
        return JSONResponse(
            {"error": "BadRequest", "message": str(exc), "hint": None}, status_code=400
        )

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return JSONResponse(
            {"error": "HTTPError", "message": exc.detail, "hint": None},
            status_code=exc.status_code,
        )

    return Starlette(
        routes=[
            Route(f"{API}/health", health),
            Route(f"{API}/status", status),
            Route(f"{API}/releases", create_release, methods=["POST"]),
            Route(f"{API}/releases/{{release_id:int}}", get_release),
            Route(f"{API}/history", history),
            Route(f"{API}/rollback", rollback, methods=["POST"]),
            Route(f"{API}/control", control, methods=["POST"]),
            Route(f"{API}/events", events),
            Route("/metrics", metrics),
        ],
        exception_handlers={
            ConveyorError: conveyor_error,
            ValueError: bad_request,
            HTTPException: http_error,
        },
    )


async def _json(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise ValueError("the request body must be a JSON object") from None
    if not isinstance(body, dict):
        raise ValueError("the request body must be a JSON object")
    return body


def _field(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise ValueError(f"missing or empty field {name!r}")
    return value


def _query(request: Request, name: str) -> str:
    value = request.query_params.get(name)
    if not value:
        raise ValueError(f"missing query parameter {name!r}")
    return value


def _actor(request: Request) -> str:
    return request.headers.get("x-conveyor-actor") or "anonymous"
