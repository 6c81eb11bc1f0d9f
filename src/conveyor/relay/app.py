"""The relay's HTTP side: flag sets for SDKs, OFREP evaluation, outcome reports.

Every route but ``/health`` needs one of the relay's SDK keys (``Authorization: Bearer
KEY`` or OFREP's ``X-API-Key``); keys are compared in constant time. Bodies are limited
to ``MAX_BODY`` bytes.

* ``GET /sdk/v1/flags/{env}``: the environment's document, with the server's ETag;
  ``If-None-Match`` -> 304. This is what the Python SDK polls.
* ``POST /ofrep/v1/evaluate/flags/{key}`` and ``POST /ofrep/v1/evaluate/flags`` (bulk):
  the OpenFeature Remote Evaluation Protocol, evaluated here from the cached set. The
  environment is the relay's first unless the request names another in
  ``X-Conveyor-Env``. Errors use OFREP's codes (``FLAG_NOT_FOUND`` 404,
  ``INVALID_CONTEXT``/``PARSE_ERROR`` 400); bulk answers carry an ETag of set and context.
* ``POST /sdk/v1/outcomes``: SDKs' exposure and outcome counters for guarded rollouts,
  summed here and forwarded upstream once per interval (``Outcomes``), so what reaches the
  server grows with relays, not with SDKs.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from conveyor.relay.cache import FlagCache, Snapshot
from conveyor.relay.outcomes import Outcomes
from conveyor.relay.upstream import Upstream

MAX_BODY = 64 * 1024
Handler = Callable[[Request], Awaitable[Response]]


class Served:
    """What the relay answered, for its health page and the benchmarks."""

    def __init__(self) -> None:
        self.flag_sets = 0
        self.not_modified = 0
        self.evaluations = 0
        self.reports = 0
        self.refused = 0


def create_relay_app(
    cache: FlagCache,
    upstream: Upstream,
    outcomes: Outcomes,
    envs: list[str],
    keys: Iterable[str],
) -> tuple[Starlette, Served]:
    served = Served()
    secrets = [k.encode() for k in keys if k]
    default_env = envs[0]

    def authorized(request: Request) -> bool:
        value = request.headers.get("x-api-key") or ""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            value = token.strip()
        given = value.encode()
        ok = any(hmac.compare_digest(given, key) for key in secrets)
        if not ok:
            served.refused += 1
        return ok

    def guarded(handler: Handler) -> Handler:
        async def endpoint(request: Request) -> Response:
            if not authorized(request):
                return JSONResponse(
                    {"errorCode": "UNAUTHORIZED", "errorDetails": "an SDK key is needed"},
                    status_code=401,
                )
            return await handler(request)

        return endpoint

    async def health(request: Request) -> Response:
        now = time.time()
        sets = {}
        for env in envs:
            snapshot = cache.get(env)
            sets[env] = (
                None
                if snapshot is None
                else {
                    "etag": snapshot.etag,
                    "revision": snapshot.revision,
                    "source": snapshot.source,
                    "age": round(now - snapshot.received_at, 3),
                    "flags": len(snapshot.flags),
                }
            )
        stats = upstream.stats
        return JSONResponse(
            {
                "ok": all(sets.values()),
                "sets": sets,
                "upstream": {
                    "requests": stats.requests,
                    "not_modified": stats.not_modified,
                    "updates": stats.updates,
                    "failures": stats.failures,
                    "connected": stats.connected,
                    "forwarded": stats.forwarded,
                },
                "served": vars(served),
            }
        )

    async def flag_set(request: Request) -> Response:
        env = request.path_params["env"]
        snapshot = _snapshot(cache, env, envs)
        if snapshot is None:
            return JSONResponse({"error": f"no flag set for {env!r} yet"}, status_code=503)
        headers = {"ETag": snapshot.etag, "Cache-Control": "no-cache"}
        if request.headers.get("if-none-match") == snapshot.etag:
            served.not_modified += 1
            return Response(status_code=304, headers=headers)
        served.flag_sets += 1
        return Response(snapshot.body, media_type="application/json", headers=headers)

    async def ofrep_one(request: Request) -> Response:
        key = request.path_params["key"]
        context, problem = await _context(request)
        if problem is not None:
            return JSONResponse(
                {"key": key, "errorCode": "INVALID_CONTEXT", "errorDetails": problem}, 400
            )
        snapshot = _snapshot(cache, request.headers.get("x-conveyor-env") or default_env, envs)
        compiled = snapshot.flags.get(key) if snapshot is not None else None
        if compiled is None:
            return JSONResponse(
                {"key": key, "errorCode": "FLAG_NOT_FOUND", "errorDetails": f"no flag {key!r}"},
                404,
            )
        served.evaluations += 1
        return JSONResponse(_ofrep(key, compiled.evaluate(context)))

    async def ofrep_bulk(request: Request) -> Response:
        context, problem = await _context(request)
        if problem is not None:
            return JSONResponse({"errorCode": "INVALID_CONTEXT", "errorDetails": problem}, 400)
        snapshot = _snapshot(cache, request.headers.get("x-conveyor-env") or default_env, envs)
        if snapshot is None:
            return JSONResponse({"errorCode": "GENERAL", "errorDetails": "no flag set yet"}, 503)
        digest = hashlib.sha256(
            snapshot.etag.encode() + json.dumps(context, sort_keys=True).encode()
        ).hexdigest()[:32]
        etag = f'"{digest}"'
        if request.headers.get("if-none-match") == etag:
            served.not_modified += 1
            return Response(status_code=304, headers={"ETag": etag})
        served.evaluations += len(snapshot.flags)
        flags = [_ofrep(key, c.evaluate(context)) for key, c in sorted(snapshot.flags.items())]
        return JSONResponse({"flags": flags}, headers={"ETag": etag})

    async def report(request: Request) -> Response:
        body = await _body(request)
        if body is None:
            return JSONResponse({"error": "a JSON object of at most 64 KiB"}, 400)
        try:
            outcomes.add(body)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, 400)
        served.reports += 1
        return JSONResponse({"ok": True}, 202)

    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/sdk/v1/flags/{env}", guarded(flag_set), methods=["GET"]),
        Route("/sdk/v1/outcomes", guarded(report), methods=["POST"]),
        Route("/ofrep/v1/evaluate/flags/{key}", guarded(ofrep_one), methods=["POST"]),
        Route("/ofrep/v1/evaluate/flags", guarded(ofrep_bulk), methods=["POST"]),
    ]
    return Starlette(routes=routes), served


def _snapshot(cache: FlagCache, env: str, envs: list[str]) -> Snapshot | None:
    return cache.get(env) if env in envs else None


def _ofrep(key: str, resolution: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "key": key,
        "value": resolution.value,
        "reason": resolution.reason,
        "variant": resolution.variant,
        "metadata": {},
    }
    return out


async def _body(request: Request) -> dict[str, Any] | None:
    raw = bytearray()
    async for chunk in request.stream():
        raw.extend(chunk)
        if len(raw) > MAX_BODY:
            return None
    try:
        data = json.loads(raw or b"{}")
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


async def _context(request: Request) -> tuple[dict[str, Any], str | None]:
    body = await _body(request)
    if body is None:
        return {}, "the body must be a JSON object of at most 64 KiB"
    context = body.get("context", {})
    if not isinstance(context, dict):
        return {}, "'context' must be an object"
    return context, None
