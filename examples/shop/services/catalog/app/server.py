"""The catalog example service: a JSON list of items and a greeting from configuration.

Readiness is DEEP: the instance is ready only when its own data parsed at startup and, when
``PRICING_URL`` is configured, the pricing service answers — the checks a user's request
would need. The pricing answer is cached for a second so frequent probes stay cheap.
Liveness is shallow on purpose: a dependency being down must not restart this process.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from faults import Faults
from serving import DROP, serve

HERE = Path(__file__).resolve().parent


def load_items() -> tuple[list[dict[str, Any]], str | None]:
    """The items shipped in the artifact, or the reason they could not be read."""
    try:
        items = json.loads((HERE / "items.json").read_text())
    except (OSError, ValueError) as exc:
        return [], f"items.json unreadable: {exc}"
    if not isinstance(items, list) or not items:
        return [], "items.json holds no items"
    return items, None


class PricingCheck:
    """Whether pricing answers its readiness endpoint, remembered for ``ttl`` seconds."""

    def __init__(self, url: str, ttl: float = 1.0) -> None:
        self.url = url.rstrip("/") + "/health/ready"
        self.ttl = ttl
        self._checked_at = -1e9
        self._problem: str | None = None
        self._lock = threading.Lock()

    def problem(self) -> str | None:
        with self._lock:
            if time.monotonic() - self._checked_at >= self.ttl:
                self._problem = self._ask()
                self._checked_at = time.monotonic()
            return self._problem

    def _ask(self) -> str | None:
        try:
            with urllib.request.urlopen(self.url, timeout=1.0) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            return f"pricing not ready: {exc.code} at {self.url}"
        except (OSError, ValueError) as exc:
            return f"pricing unreachable at {self.url}: {exc}"
        return None


def main() -> None:
    faults = Faults.from_environ()
    faults.delay_startup()
    items, data_problem = load_items()
    greeting = os.environ.get("GREETING", "hello")
    instance = os.environ.get("CONVEYOR_INSTANCE_ID", "-")
    pricing_url = os.environ.get("PRICING_URL")
    pricing = PricingCheck(pricing_url) if pricing_url else None

    def not_ready() -> str | None:
        if faults.readiness_fails:
            return "readiness fault injected (FAULT_READINESS=fail)"
        return data_problem or (pricing.problem() if pricing else None)

    def route(path: str, query: dict[str, str]) -> tuple[int, Any]:
        if path == "/health/live":
            return 200, {"live": True}
        if path == "/health/ready":
            reason = not_ready()
            return (503, {"ready": False, "reason": reason}) if reason else (200, {"ready": True})
        if path == "/":
            if faults.request_drops():
                return DROP, None
            if faults.request_fails():
                return 500, {"error": "error fault injected (FAULT_ERROR_RATE)"}
            return 200, {"greeting": greeting, "instance": instance, "items": items}
        return 404, {"error": f"no route for {path}"}

    faults.arm_crash()
    serve("catalog", route, f"greeting={greeting!r} faults: {faults.describe()}")


if __name__ == "__main__":
    main()
