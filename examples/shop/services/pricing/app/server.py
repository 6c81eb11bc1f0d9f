"""The pricing example service: the price of one item (``/?item=mug``) or of all of them.

Readiness checks that the price list shipped in the artifact parsed at startup; a catalog
instance in turn checks pricing before it calls itself ready, which makes the pair a small
but real dependency chain for rollout demos.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from faults import Faults
from serving import DROP, serve

HERE = Path(__file__).resolve().parent


def load_prices() -> tuple[dict[str, Any], str | None]:
    """The price list shipped in the artifact, or the reason it could not be read."""
    try:
        data = json.loads((HERE / "prices.json").read_text())
        prices = {str(k): float(v) for k, v in data["prices"].items()}
        currency = str(data["currency"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return {}, f"prices.json unreadable: {type(exc).__name__}: {exc}"
    if not prices:
        return {}, "prices.json holds no prices"
    return {"currency": os.environ.get("CURRENCY", currency), "prices": prices}, None


def main() -> None:
    faults = Faults.from_environ()
    faults.delay_startup()
    table, data_problem = load_prices()
    instance = os.environ.get("CONVEYOR_INSTANCE_ID", "-")

    def not_ready() -> str | None:
        if faults.readiness_fails:
            return "readiness fault injected (FAULT_READINESS=fail)"
        return data_problem

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
            item = query.get("item")
            if item is None:
                return 200, {**table, "instance": instance}
            if item not in table.get("prices", {}):
                return 404, {"error": f"no price for item {item!r}", "instance": instance}
            price = table["prices"][item]
            return 200, {
                "item": item,
                "price": price,
                "currency": table["currency"],
                "instance": instance,
            }
        return 404, {"error": f"no route for {path}"}

    faults.arm_crash()
    serve("pricing", route, f"faults: {faults.describe()}")


if __name__ == "__main__":
    main()
