"""One page's Server-Sent Events: what changed since the page (or the last message) was sent.

Each page has one stream. Every ``period`` — or only when the ledger moved or what the
view's ``watch`` looks at changed, for pages that show nothing else — the page's context is
built again (off the event loop) and compared with what the browser has: the live part's
HTML (the browser swaps only the sections that differ), the chart data, and on the overview
each cell's state (only changed cells are sent, in one message). Messages carry the ledger
head as their id: a browser reconnecting sends it back (``Last-Event-ID``), as a fresh page
sends the head it was rendered at (``?since=``); if the ledger moved meanwhile everything is
sent once, otherwise nothing is resent. A stream ends after ``LIFETIME`` (the browser
reconnects and the session is checked again) and at once when the session's token stops
working.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from starlette.requests import Request

from conveyor.application import Caller
from conveyor.errors import ConveyorError, Unauthenticated
from conveyor.server.dashboard.sessions import Session
from conveyor.server.dashboard.views import View

if TYPE_CHECKING:
    from conveyor.server.dashboard.routes import Dashboard

LIFETIME = 300.0
"""Seconds a stream lives; the browser's EventSource reconnects on its own."""

log = logging.getLogger("conveyor.dashboard")

Message = dict[str, str]


class Updates:
    def __init__(
        self,
        dashboard: Dashboard,
        view: View,
        caller: Caller,
        session: Session,
        params: Mapping[str, str],
        query: Mapping[str, str],
        *,
        known: str | None,
    ) -> None:
        self.dashboard = dashboard
        self.view = view
        self.caller = caller
        self.session = session
        self.params = params
        self.query = query
        self.known = known  # the ledger head the browser's page shows, if it said
        self.sent: dict[str, str] = {}

    async def run(self, request: Request) -> AsyncIterator[Message]:
        app = self.dashboard.app
        started = time.monotonic()
        last_head: int | None = None
        base = {
            "page_view": self.view,
            "caller": self.caller,
            "session": self.session,
            "csrf": self.session.csrf,
            "path": request.url.path,
            "notice": None,
        }
        first = True
        last_seen: object = None
        while time.monotonic() - started < LIFETIME:
            if not first:
                await asyncio.sleep(self.view.period)
            if await request.is_disconnected():
                return
            try:
                app.tokens.authenticate(self.session.secret)  # revoked: the stream ends
            except Unauthenticated:
                yield {"event": "signed-out", "data": "/ui/login"}
                return
            head, _ = await asyncio.to_thread(app.store.ledger_head)
            if first and self.known is not None and self.known != str(head):
                self._forget()  # the page is older than the ledger: send everything once
            seen = None
            if self.view.watch is not None:
                seen = await asyncio.to_thread(self.view.watch, app, self.params)
            if self.view.always or head != last_head or seen != last_seen:
                last_head, last_seen = head, seen
                try:
                    messages = await asyncio.to_thread(self.render, base)
                except ConveyorError as error:
                    messages = [{"event": "problem", "data": error.message}]
                except Exception:  # a bug: say so on the page, keep the stream
                    log.exception("dashboard stream %s failed", request.url.path)
                    messages = [{"event": "problem", "data": "update failed (see server log)"}]
                for message in messages:
                    yield {**message, "id": str(head)}
            if first:  # what the page shows is known now: every later change is sent
                first = False
                yield {"event": "ready", "data": self.view.name, "id": str(head)}

    def _forget(self) -> None:
        """Make the next render send everything (as if the page had nothing)."""
        self.sent = {"summary": "", "live": "", "chart": ""}

    def render(self, base: Mapping[str, Any]) -> list[Message]:
        view, sent, dashboard = self.view, self.sent, self.dashboard
        context = {**base, **view.context(dashboard.app, self.caller, self.params, self.query)}
        out: list[Message] = []
        if view.name == "overview":
            changed: dict[str, str] = {}
            primed = "summary" in sent  # the page already has the first render
            macros = dashboard.templates.get_template("cells.html").module
            for cell in context["ov"].cells.values():
                key = f"c-{cell.service}--{cell.env}"
                signature = repr(cell.signature)
                if sent.get(key) != signature:
                    if primed:
                        changed[key] = str(macros.cell(cell))  # type: ignore[attr-defined]
                    sent[key] = signature
            summary = dashboard.render_block(view.template, "summary", **context)
            if sent.get("summary") != summary:
                if primed:
                    changed["summary"] = summary
                sent["summary"] = summary
            if changed:
                out.append({"event": "cells", "data": json.dumps(changed)})
            return out
        live = dashboard.render_block(view.template, "live", **context)
        if sent.get("live") != live:
            if "live" in sent:
                out.append({"event": "live", "data": live})
            sent["live"] = live
        chart = context.get("chart")
        if chart is not None:
            data = json.dumps(chart)
            if sent.get("chart") != data:
                if "chart" in sent:
                    out.append({"event": "chart", "data": data})
                sent["chart"] = data
        return out
