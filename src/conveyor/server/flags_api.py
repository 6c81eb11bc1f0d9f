"""The flag routes: read and change flags, and publish each environment's set to relays.

Changes go through ``Application.flags`` (who may change which environment is decided
there). Publication is built for caches: ``GET /api/v1/flagsets/{env}`` answers with a
strong ``ETag`` and honours ``If-None-Match`` with 304 and no body; ``.../stream`` is a
Server-Sent Events stream that sends the document when it changes (``event: flags``, the
ETag as the event id) and a comment every ``KEEPALIVE`` seconds so proxies keep it open.
Relays use both: the stream for pushes, conditional polls when the stream is down.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from conveyor.application import Application, Caller
from conveyor.application.flags import RECHECK
from conveyor.errors import UsageError
from conveyor.server.api import (
    API,
    AuthedHandler,
    _field,
    _int,
    _json,
    _optional,
    event_json,
)
from conveyor.server.rules import DEPLOY, PUBLISH, READ, Rule

KEEPALIVE = 15.0
STREAM_LIFETIME = 3600.0
"""A stream ends after this long; relays reconnect (and a server's memory per stream is bounded)."""


def flag_table(app: Application) -> list[tuple[str, list[str], AuthedHandler, Rule]]:
    flags = app.flags

    async def list_flags(request: Request, caller: Caller) -> Response:
        return JSONResponse({"flags": flags.list_flags(caller)})

    async def drift(request: Request, caller: Caller) -> Response:
        return JSONResponse({"drift": flags.drift(caller)})

    async def show(request: Request, caller: Caller) -> Response:
        return JSONResponse(flags.show(caller, request.path_params["key"]))

    async def history(request: Request, caller: Caller) -> Response:
        limit = _int(request, "limit", 200, 1, 5000) or 200
        events = flags.history(caller, request.path_params["key"], limit)
        return JSONResponse({"events": [event_json(e) for e in events]})

    async def set_state(request: Request, caller: Caller) -> Response:
        body = await _json(request)
        on = body.get("on")
        if not isinstance(on, bool):
            raise UsageError("'on' must be true or false")
        done = flags.set_state(
            caller, request.path_params["key"], _field(body, "env"), on, _reason(body)
        )
        return JSONResponse(done)

    async def kill(request: Request, caller: Caller) -> Response:
        body = await _json(request)
        return JSONResponse(flags.kill(caller, request.path_params["key"], _reason(body)))

    async def reset(request: Request, caller: Caller) -> Response:
        body = await _json(request)
        return JSONResponse(flags.reset(caller, request.path_params["key"], _reason(body)))

    async def rollout(request: Request, caller: Caller) -> Response:
        body = await _json(request)
        percentage = body.get("percentage")
        if isinstance(percentage, bool) or not isinstance(percentage, int):
            raise UsageError("'percentage' must be a whole number from 0 to 100")
        done = flags.set_rollout(
            caller,
            request.path_params["key"],
            _field(body, "env"),
            percentage,
            _text(body, "variant"),
            _text(body, "stickiness"),
            _reason(body),
        )
        return JSONResponse(done)

    async def rules(request: Request, caller: Caller) -> Response:
        body = await _json(request)
        done = flags.set_rules(
            caller,
            request.path_params["key"],
            _field(body, "env"),
            body.get("rules"),
            _reason(body),
        )
        return JSONResponse(done)

    async def guarded(request: Request, caller: Caller) -> Response:
        body = await _json(request)
        steps = body.get("steps")
        if not isinstance(steps, list) or not all(
            isinstance(s, int) and not isinstance(s, bool) for s in steps
        ):
            raise UsageError("'steps' is a list of whole percentages, e.g. [1, 10, 50, 100]")
        interval = body.get("interval", 30)
        if isinstance(interval, bool) or not isinstance(interval, int | float):
            raise UsageError("'interval' is the time per step, in seconds")
        started = app.flag_rollouts.start(
            caller,
            request.path_params["key"],
            _field(body, "env"),
            steps,
            _text(body, "analysis") or "errors",
            float(interval),
            _text(body, "variant"),
            _reason(body),
        )
        return JSONResponse(started, status_code=201)

    async def outcomes(request: Request, caller: Caller) -> Response:
        body = await _json(request)
        taken = app.flag_rollouts.outcomes(caller, body.get("counts"))
        return JSONResponse({"accepted": taken}, status_code=202)

    async def rollouts(request: Request, caller: Caller) -> Response:
        key = _optional(request, "flag")
        return JSONResponse({"rollouts": app.flag_rollouts.progress(caller, key)})

    async def flagset(request: Request, caller: Caller) -> Response:
        published = flags.published(caller, request.path_params["env"])
        headers = {"ETag": published.etag, "Cache-Control": "no-cache"}
        if _matches(request.headers.get("if-none-match"), published.etag):
            return Response(status_code=304, headers=headers)
        return Response(published.body, media_type="application/json", headers=headers)

    async def stream(request: Request, caller: Caller) -> Response:
        env = request.path_params["env"]
        first = flags.published(caller, env)  # authorizes, and 404s an unknown env now
        since = _optional(request, "etag") or request.headers.get("last-event-id")

        async def events() -> AsyncIterator[bytes]:
            sent = since
            published = first
            started = last_check = last_beat = time.monotonic()
            generation = flags.generation
            while time.monotonic() - started < STREAM_LIFETIME:
                if published.etag != sent:
                    sent = published.etag
                    yield (
                        f"event: flags\nid: {published.etag}\ndata: ".encode()
                        + published.body
                        + b"\n\n"
                    )
                    last_beat = time.monotonic()
                await asyncio.sleep(0.1)
                now = time.monotonic()
                if flags.generation != generation or now - last_check >= RECHECK:
                    generation, last_check = flags.generation, now
                    published = await asyncio.to_thread(flags.published, caller, env)
                if now - last_beat >= KEEPALIVE:
                    last_beat = now
                    yield b": keepalive\n\n"

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    key = f"{API}/flags/{{key}}"
    return [
        (f"{API}/flags", ["GET"], list_flags, READ),
        (f"{API}/flags/drift", ["GET"], drift, READ),
        (key, ["GET"], show, READ),
        (f"{key}/history", ["GET"], history, READ),
        (f"{key}/state", ["POST"], set_state, DEPLOY),
        (f"{key}/kill", ["POST"], kill, DEPLOY),
        (f"{key}/reset", ["POST"], reset, DEPLOY),
        (f"{key}/rollout", ["POST"], rollout, DEPLOY),
        (f"{key}/rules", ["POST"], rules, DEPLOY),
        (f"{key}/guarded", ["POST"], guarded, DEPLOY),
        (f"{API}/flags/outcomes", ["POST"], outcomes, PUBLISH),
        (f"{API}/flag-rollouts", ["GET"], rollouts, READ),
        (f"{API}/flagsets/{{env}}", ["GET"], flagset, READ),
        (f"{API}/flagsets/{{env}}/stream", ["GET"], stream, READ),
    ]


def _reason(body: dict[str, Any]) -> str:
    value = body.get("reason")
    if not isinstance(value, str):
        raise UsageError("'reason' says why (text); it goes on the ledger")
    return value


def _text(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and (not isinstance(value, str) or len(value) > 200):
        raise UsageError(f"'{name}' must be short text")
    return value or None


def _matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    tags = [t.strip().removeprefix("W/") for t in header.split(",")]
    return "*" in tags or etag in tags
