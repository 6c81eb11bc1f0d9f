"""Webhook notifier: POST the notification as JSON, signed when a secret is configured.

The signature is GitHub's scheme — ``X-Conveyor-Signature: sha256=<hex HMAC of the body>``
— so receivers can reuse the verification code they already have. The secret is read from
an environment variable named in the config, never from the config file itself.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Collection

import httpx

from conveyor.notify.base import DEFAULT_EVENTS, Notification


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookNotifier:
    kind = "webhook"

    def __init__(
        self,
        url: str,
        *,
        events: Collection[str] = DEFAULT_EVENTS,
        secret: str | None = None,
        timeout: float = 5.0,
    ) -> None:
        self.url = url
        self.events = frozenset(events)
        self.secret = secret
        self.timeout = timeout

    def wants(self, event_kind: str) -> bool:
        return event_kind in self.events

    async def notify(self, notification: Notification) -> None:
        body = json.dumps(notification.to_json(), sort_keys=True, default=str).encode()
        headers = {"content-type": "application/json", "user-agent": "conveyor"}
        if self.secret:
            headers["x-conveyor-signature"] = signature(self.secret, body)
        async with httpx.AsyncClient(timeout=self.timeout) as client:
            response = await client.post(self.url, content=body, headers=headers)
        response.raise_for_status()
