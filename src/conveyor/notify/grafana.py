"""Deployment markers as Grafana annotations: one POST /api/annotations per marked event.

Grafana draws an annotation as a vertical line on every time series panel (or on one
dashboard, with ``dashboardUID``), tagged so a panel can filter them (``service:shop``).
The token is a Grafana service account token read from the server's environment, sent as
``Authorization: Bearer``; it is never written to a file.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import httpx

from conveyor.notify.base import Notification

TEXTS = {
    "rollout.started": "rollout started",
    "release.succeeded": "released",
    "release.rolled_back": "rolled back",
    "release.failed": "failed",
}


def annotation(
    notification: Notification, tags: Sequence[str], dashboard: str | None
) -> dict[str, Any]:
    n = notification
    what = TEXTS.get(n.kind, n.kind)
    text = f"{n.service} {what} in {n.env}: r{n.revision} {n.version or ''}".strip()
    if n.commit:
        text += f" (commit {n.commit[:12]})"
    body: dict[str, Any] = {
        "time": int(n.at * 1000),
        "tags": [*tags, f"service:{n.service}", f"env:{n.env}", n.kind],
        "text": text,
    }
    if dashboard:
        body["dashboardUID"] = dashboard
    return body


class GrafanaNotifier:
    kind = "grafana"

    def __init__(
        self,
        url: str,
        token: str | None,
        *,
        events: Collection[str],
        tags: Sequence[str] = ("conveyor",),
        dashboard_uid: str | None = None,
        timeout: float = 5.0,
    ) -> None:
        self.url = url.rstrip("/") + "/api/annotations"
        self.token = token
        self.events = frozenset(events)
        self.tags = tuple(tags)
        self.dashboard_uid = dashboard_uid
        self.timeout = timeout

    def wants(self, event_kind: str) -> bool:
        return event_kind in self.events

    async def notify(self, notification: Notification) -> None:
        headers = {"content-type": "application/json", "user-agent": "conveyor"}
        if self.token:
            headers["authorization"] = f"Bearer {self.token}"
        body = annotation(notification, self.tags, self.dashboard_uid)
        async with httpx.AsyncClient(timeout=self.timeout) as client:
            response = await client.post(self.url, json=body, headers=headers)
        response.raise_for_status()
