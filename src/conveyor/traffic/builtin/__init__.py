"""The built-in traffic router: an asyncio HTTP/1.1 reverse proxy with per-version metrics.

It needs nothing but Python (uvloop and httptools make it fast) and gives every
(service, environment) one stable address across deploys. See ``router`` for the public
object, ``balancer`` for the traffic-split rules and ``metrics`` for the accounting rules.
"""

from conveyor.traffic.builtin.metrics import LATENCY_BUCKETS, NO_VERSION
from conveyor.traffic.builtin.router import PREVIEW_VERSION, BuiltinRouter

__all__ = ["LATENCY_BUCKETS", "NO_VERSION", "PREVIEW_VERSION", "BuiltinRouter"]
