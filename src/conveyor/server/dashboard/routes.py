"""The dashboard's routes: pages, their streams, the forms, sign-in — each with its ``Rule``.

Same server, same port as the API, under ``/ui``. A page is a ``View`` rendered on the
server (readable without JavaScript); ``/ui/stream/<same path>`` is that page's one
Server-Sent Events stream, which re-renders the page's live part when the ledger moves (or
every period for pages showing instances) and sends it only when it changed — batched, one
connection per page, and the browser's ``EventSource`` reconnects on its own.

Buttons are forms: each POST carries the session's CSRF token and goes through the same
``Application`` verb as the API (``control``, ``rollback``, ``vote``, ``flags.set_state``,
``flags.kill``), so it is checked the same way and lands on the ledger with the signed-in
identity as actor.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import mimetypes
import secrets
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import jinja2
from markupsafe import Markup, escape
from sse_starlette.sse import EventSourceResponse
from starlette.concurrency import iterate_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from conveyor import __version__
from conveyor.application import Application, Caller
from conveyor.application.access import authorize
from conveyor.errors import ConveyorError, Forbidden, Unauthenticated, UsageError
from conveyor.server.dashboard.sessions import (
    COOKIE,
    LOGIN_COOKIE,
    Session,
    Sessions,
    cookie_header,
    same,
)
from conveyor.server.dashboard.streams import Updates
from conveyor.server.dashboard.views import VIEWS, View, ago, duration, percent, short, when
from conveyor.server.rules import APPROVE, DEPLOY, PUBLIC, READ, Rule, with_rule

UI = "/ui"
HERE = Path(__file__).parent
STATIC = HERE / "static"
GZIP_OVER = 8 * 1024
"""Pages larger than this (bytes) are sent gzipped to browsers that accept it."""
MAX_FORM = 64 * 1024
"""Form bodies larger than this are refused (a comment has at most 2000 characters)."""
CONTROLS = {
    "promote": "promote",
    "promote_full": "promote_full",
    "pause": "pause",
    "resume": "resume",
    "abort": "abort",
}
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; "
    "form-action 'self'; base-uri 'none'"
)

log = logging.getLogger("conveyor.dashboard")

Page = Callable[[Request, Caller, Session], Awaitable[Response]]


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        ago=ago, when=when, short=short, duration=duration, percent=percent, tojson_pretty=_pretty
    )
    env.globals.update(version=__version__, UI=UI)
    return env


def _pretty(value: object) -> Markup:
    return Markup.escape(json.dumps(value, indent=2, sort_keys=True, default=str))


class Dashboard:
    """The dashboard of one ``Application``: its sessions, templates and routes."""

    def __init__(self, app: Application, *, project_name: str) -> None:
        self.app = app
        self.project_name = project_name
        self.sessions = Sessions(app.clock)
        self.templates = environment()

    # --- rendering ---------------------------------------------------------------------

    def render(self, template: str, **context: Any) -> str:
        return self.templates.get_template(template).render(project=self.project_name, **context)

    def render_block(self, template: str, block: str, **context: Any) -> str:
        tmpl = self.templates.get_template(template)
        ctx = tmpl.new_context({"project": self.project_name, **context})
        return "".join(tmpl.blocks[block](ctx))

    def html(
        self,
        body: str,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        request: Request | None = None,
    ) -> Response:
        """A page; gzipped when the browser takes it and it is worth it (the overview at
        500 services is ~500 KiB of HTML, ~30 KiB compressed)."""
        data = body.encode()
        extra = dict(headers or {})
        accepts = request is not None and "gzip" in request.headers.get("accept-encoding", "")
        if accepts and len(data) > GZIP_OVER:
            data = gzip.compress(data, compresslevel=5)
            extra["content-encoding"] = "gzip"
            extra["vary"] = "Accept-Encoding"
        return Response(data, status_code=status, headers=_headers(extra), media_type="text/html")

    def error_page(
        self, request: Request, error: ConveyorError, session: Session | None
    ) -> Response:
        body = self.render(
            "error.html",
            title=f"{error.http_status}",
            error=error,
            session=session,
            caller=None,
            csrf=session.csrf if session else "",
            path=request.url.path,
        )
        return self.html(body, error.http_status)

    def internal_error(self, request: Request) -> Response:
        """A bug, as a page: what failed and where the details are (the server log)."""
        body = (
            "<!doctype html><html lang=en><meta charset=utf-8><title>500 · Conveyor</title>"
            f'<link rel="stylesheet" href="{UI}/static/style.css"><main><h1>500 · a bug in '
            f"Conveyor</h1><p class=problem>The server failed on {request.method} "
            f"{escape(request.url.path)}. The server log (.conveyor/server.log) has the "
            f'details; please report it.</p><p><a href="{UI}/">Back to the overview</a></p>'
            "</main></html>"
        )
        return HTMLResponse(body, status_code=500, headers=_headers(None))

    # --- the door ----------------------------------------------------------------------

    def page(
        self, rule: Rule, handler: Page, name: str
    ) -> Callable[[Request], Awaitable[Response]]:
        """An endpoint: the session's caller, the rule, a CSRF check on POST, the handler;
        errors become pages (sign-in for a GET without a session)."""

        async def endpoint(request: Request) -> Response:
            session = self.sessions.get(request.cookies.get(COOKIE))
            try:
                if session is None:
                    raise Unauthenticated("sign in to see the dashboard")
                try:
                    caller = self.app.tokens.authenticate(session.secret)
                except Unauthenticated:
                    self.sessions.close(session.id)
                    raise
                if rule.permission is not None:
                    authorize(caller, rule.permission, None, self.app.policy.current())
                if request.method == "POST":
                    await self.check_csrf(request, session)
                return await handler(request, caller, session)
            except Unauthenticated as error:
                if request.method == "GET" and not request.url.path.startswith(f"{UI}/stream"):
                    target = request.url.path + (
                        f"?{request.url.query}" if request.url.query else ""
                    )
                    return RedirectResponse(
                        f"{UI}/login?next={quote(target, safe='')}", status_code=303
                    )
                return self.error_page(request, error, None)
            except ConveyorError as error:
                return self.error_page(request, error, session)

        return with_rule(endpoint, rule, name)

    async def check_csrf(self, request: Request, session: Session) -> None:
        """Refuse (403) a POST that is not a form carrying this session's CSRF token."""
        try:
            form = await self.form(request)
        except UsageError:
            form = {}
        if not same(session.csrf, form.get("csrf")):
            raise Forbidden(
                "this form has no valid CSRF token",
                hint="reload the page and send the form again (forms expire with the session)",
            )

    async def form(self, request: Request) -> dict[str, str]:
        """The urlencoded form of a POST, at most ``MAX_FORM`` bytes (cached per request)."""
        cached = request.scope.get("conveyor.form")
        if cached is not None:
            return dict(cached)
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/x-www-form-urlencoded":
            raise UsageError("the dashboard takes forms (application/x-www-form-urlencoded)")
        body = bytearray()
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > MAX_FORM:
                raise UsageError(f"the form is larger than {MAX_FORM} bytes")
        try:
            pairs = parse_qsl(body.decode(), keep_blank_values=True, max_num_fields=20)
        except (UnicodeDecodeError, ValueError):
            raise UsageError("the form could not be read") from None
        form = {k: v for k, v in pairs}
        request.scope["conveyor.form"] = form
        return form

    # --- sign-in -----------------------------------------------------------------------

    async def login_form(self, request: Request) -> Response:
        nonce = _nonce()
        secure = request.url.scheme == "https"
        body = self.render(
            "login.html",
            title="Sign in",
            nonce=nonce,
            next=_safe_next(request.query_params.get("next")),
            problem=None,
            session=None,
            caller=None,
            csrf="",
            path=request.url.path,
        )
        return self.html(
            body, headers={"set-cookie": cookie_header(LOGIN_COOKIE, nonce, secure=secure)}
        )

    async def login(self, request: Request) -> Response:
        secure = request.url.scheme == "https"
        try:
            form = await self.form(request)
        except UsageError as error:
            return self.error_page(request, error, None)
        target = _safe_next(form.get("next"))
        problem: str | None = None
        if not same(request.cookies.get(LOGIN_COOKIE), form.get("csrf")):
            problem = "the sign-in form expired; it has been reloaded, please sign in again"
        else:
            secret = (form.get("token") or "").strip()
            try:
                caller = self.app.tokens.authenticate(secret)
            except Unauthenticated as error:
                problem = f"{error.message}. {error.hint or ''}".strip()
            else:
                session = self.sessions.open(secret)
                log.info("dashboard sign-in by %s", caller.actor)
                response = RedirectResponse(target, status_code=303)
                response.headers.append(
                    "set-cookie", cookie_header(COOKIE, session.id, secure=secure)
                )
                response.headers.append(
                    "set-cookie", cookie_header(LOGIN_COOKIE, "", secure=secure, max_age=0)
                )
                return response
        nonce = _nonce()
        body = self.render(
            "login.html",
            title="Sign in",
            nonce=nonce,
            next=target,
            problem=problem,
            session=None,
            caller=None,
            csrf="",
            path=request.url.path,
        )
        return self.html(
            body, 401, headers={"set-cookie": cookie_header(LOGIN_COOKIE, nonce, secure=secure)}
        )

    async def logout(self, request: Request, caller: Caller, session: Session) -> Response:
        self.sessions.close(session.id)
        response = RedirectResponse(f"{UI}/login", status_code=303)
        response.headers.append(
            "set-cookie", cookie_header(COOKIE, "", secure=request.url.scheme == "https", max_age=0)
        )
        return response

    # --- pages and their streams ---------------------------------------------------------

    def view_page(self, view: View) -> Page:
        async def handler(request: Request, caller: Caller, session: Session) -> Response:
            params = {k: str(v) for k, v in request.path_params.items()}
            query = _query(request)
            head, _ = await asyncio.to_thread(self.app.store.ledger_head)
            context = await asyncio.to_thread(view.context, self.app, caller, params, query)
            body = await asyncio.to_thread(
                self.render,
                view.template,
                title=view.title,
                page_view=view,
                caller=caller,
                session=session,
                csrf=session.csrf,
                path=request.url.path,
                # The stream learns which ledger head the page shows (``since``), so
                # what changed while it connects is sent, not assumed known.
                stream=f"{UI}/stream{request.url.path.removeprefix(UI)}?"
                + urlencode({**{k: v for k, v in query.items() if k != "since"}, "since": head}),
                notice=query.get("done"),
                **context,
            )
            return self.html(body, request=request)

        return handler

    def view_stream(self, view: View) -> Page:
        async def handler(request: Request, caller: Caller, session: Session) -> Response:
            params = {k: str(v) for k, v in request.path_params.items()}
            query = _query(request)
            known = request.headers.get("last-event-id") or query.get("since")
            updates = Updates(self, view, caller, session, params, query, known=known)
            return EventSourceResponse(updates.run(request), ping=15, headers=_headers(None))

        return handler

    # --- the buttons ----------------------------------------------------------------------

    async def control(self, request: Request, caller: Caller, session: Session) -> Response:
        service, env = request.path_params["service"], request.path_params["env"]
        form = await self.form(request)
        action = form.get("action", "")
        if action == "rollback":
            release = await self.app.rollback(caller, service, env, None)
        elif action in CONTROLS:
            release = await self.app.control(caller, service, env, CONTROLS[action])
        else:
            raise UsageError(f"unknown action {action[:40]!r}")
        done = quote(f"{action}: {release.name} is {release.phase.value}")
        return RedirectResponse(
            f"{UI}/services/{quote(service)}/{quote(env)}?done={done}", status_code=303
        )

    async def vote(self, request: Request, caller: Caller, session: Session) -> Response:
        release_id = int(request.path_params["release_id"])
        form = await self.form(request)
        decision = form.get("decision")
        if decision not in ("approve", "reject"):
            raise UsageError("the decision is approve or reject")
        release = await self.app.vote(
            caller,
            release_id,
            approve=decision == "approve",
            comment=form.get("comment", ""),
            content=form.get("content") or None,
            page_hash=form.get("page") or None,
        )
        done = quote(f"{decision}d: {release.name} is {release.phase.value}")
        return RedirectResponse(f"{UI}/approvals/{release_id}?done={done}", status_code=303)

    async def resolve(self, request: Request, caller: Caller, session: Session) -> Response:
        """Resolve an incident: the API's verb and check (deployer in its environment)."""
        incident_id = int(request.path_params["incident_id"])
        form = await self.form(request)
        note = form.get("note", "")
        if len(note) > 2000:
            raise UsageError("a note has at most 2000 characters")
        incident = await asyncio.to_thread(self.app.resolve_incident, caller, incident_id, note)
        # Back to the page as it was (its period and filters), saying what was done.
        kept = {k: form[k][:200] for k in ("days", "env", "service") if form.get(k)}
        kept["done"] = f"incident {incident.id} resolved"
        return RedirectResponse(f"{UI}/insight?{urlencode(kept)}", status_code=303)

    async def flag_state(self, request: Request, caller: Caller, session: Session) -> Response:
        """On or off in one environment: ``Flags.set_state``, as ``conveyor flag on|off``."""
        key = request.path_params["key"]
        form = await self.form(request)
        state = form.get("state")
        if state not in ("on", "off"):
            raise UsageError("the state is on or off")
        env = form.get("env", "")
        done = await asyncio.to_thread(
            self.app.flags.set_state, caller, key, env, state == "on", form.get("reason", "")
        )
        note = f"{key} turned {state} in {env}" if done["changed"] else f"{key} was already {state}"
        return RedirectResponse(f"{UI}/flags/{quote(key)}?done={quote(note)}", status_code=303)

    async def flag_kill(self, request: Request, caller: Caller, session: Session) -> Response:
        """The kill switch: ``Flags.kill``, off in every environment in one change."""
        key = request.path_params["key"]
        form = await self.form(request)
        done = await asyncio.to_thread(self.app.flags.kill, caller, key, form.get("reason", ""))
        note = f"{key} killed: off everywhere" if done["changed"] else f"{key} was already off"
        return RedirectResponse(f"{UI}/flags/{quote(key)}?done={quote(note)}", status_code=303)

    async def audit(self, request: Request, caller: Caller, session: Session) -> Response:
        fmt = request.query_params.get("format") or "jsonl"
        days = _days(request.query_params.get("days"))
        now = self.app.clock()
        chunks = await self.app.audit(caller, since=now - days * 86400, until=now + 1, fmt=fmt)
        kind = "text/csv" if fmt == "csv" else "application/x-ndjson"
        name = f"{self.project_name}-audit-{days}d.{'csv' if fmt == 'csv' else 'jsonl'}"
        return StreamingResponse(
            iterate_in_threadpool(chunks),
            media_type=kind,
            headers={"content-disposition": f'attachment; filename="{name}"', **_headers(None)},
        )

    # --- the table ------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        async def root(request: Request) -> Response:
            return RedirectResponse(f"{UI}/", status_code=303)

        async def static(request: Request) -> Response:
            return _static(request.path_params["path"])

        table: list[tuple[str, list[str], Callable[[Request], Awaitable[Response]]]] = [
            ("/", ["GET"], with_rule(root, PUBLIC, "dashboard_root")),
            (f"{UI}/login", ["GET"], with_rule(self.login_form, PUBLIC, "login_form")),
            (f"{UI}/login", ["POST"], with_rule(self.login, PUBLIC, "login")),
            (f"{UI}/logout", ["POST"], self.page(READ, self.logout, "logout")),
            (f"{UI}/static/{{path:path}}", ["GET"], with_rule(static, PUBLIC, "static")),
            (
                f"{UI}/services/{{service}}/{{env}}/control",
                ["POST"],
                self.page(DEPLOY, self.control, "control"),
            ),
            (
                f"{UI}/approvals/{{release_id:int}}",
                ["POST"],
                self.page(APPROVE, self.vote, "vote"),
            ),
            (
                f"{UI}/flags/{{key}}/state",
                ["POST"],
                self.page(DEPLOY, self.flag_state, "flag_state"),
            ),
            (f"{UI}/flags/{{key}}/kill", ["POST"], self.page(DEPLOY, self.flag_kill, "flag_kill")),
            (f"{UI}/audit", ["GET"], self.page(READ, self.audit, "audit_download")),
            (
                f"{UI}/incidents/{{incident_id:int}}/resolve",
                ["POST"],
                self.page(DEPLOY, self.resolve, "resolve_incident"),
            ),
        ]
        for view in VIEWS:
            table.append(
                (f"{UI}{view.path}", ["GET"], self.page(READ, self.view_page(view), view.name))
            )
            table.append(
                (
                    f"{UI}/stream{view.path}",
                    ["GET"],
                    self.page(READ, self.view_stream(view), f"{view.name}_stream"),
                )
            )
        return [Route(path, endpoint, methods=methods) for path, methods, endpoint in table]


def _headers(extra: Mapping[str, str] | None) -> dict[str, str]:
    return {
        "content-security-policy": CSP,
        "x-content-type-options": "nosniff",
        "referrer-policy": "same-origin",
        "cache-control": "no-store",
        **(extra or {}),
    }


def _static(path: str) -> Response:
    """A file of the package's static directory; nothing outside it, nothing hidden."""
    if len(path) > 200 or any(
        part in ("", ".", "..") or part.startswith(".") for part in path.split("/")
    ):
        return Response("not found", status_code=404, media_type="text/plain")
    file = (STATIC / path).resolve()
    if not file.is_relative_to(STATIC.resolve()) or not file.is_file():
        return Response("not found", status_code=404, media_type="text/plain")
    kind = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
    if file.suffix == ".js":
        kind = "text/javascript"
    return Response(
        file.read_bytes(),
        media_type=kind,
        headers={"cache-control": "public, max-age=3600", "x-content-type-options": "nosniff"},
    )


def _query(request: Request) -> dict[str, str]:
    out = {}
    for key, value in request.query_params.items():
        if len(value) > 200 or "\x00" in value:
            raise UsageError(f"query parameter {key[:40]!r} is too long")
        out[key] = value
    return out


def _safe_next(value: str | None) -> str:
    """Where to go after signing in: a dashboard path on this server, nothing else."""
    if not value or len(value) > 500:
        return f"{UI}/"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or not value.startswith(f"{UI}/") or "\\" in value:
        return f"{UI}/"
    return value


def _days(raw: str | None) -> int:
    if raw is None or raw == "":
        return 90
    if not raw.isdigit() or not 1 <= int(raw) <= 3660:
        raise UsageError("days is a whole number from 1 to 3660")
    return int(raw)


def _nonce() -> str:
    return secrets.token_urlsafe(24)
