"""The built-in traffic router: an asyncio HTTP/1.1 reverse proxy with per-version metrics.

It needs nothing but Python (uvloop and httptools make it fast) and gives every
(service, environment) one stable address across deploys. See ``router`` for the public
object (run in its own process by ``daemon``, driven by ``client.RouterProcess`` over the
protocol of ``control``), ``limits`` for what a client may make it hold, ``balancer`` for
the traffic-split rules and ``metrics`` for the accounting rules.
"""

from conveyor.traffic.builtin import accel

accel.activate(__path__)  # before the hot modules are imported: compiled if built (accel)

from conveyor.traffic.builtin.client import RouterProcess  # noqa: E402
from conveyor.traffic.builtin.limits import RouterLimits  # noqa: E402
from conveyor.traffic.builtin.metrics import LATENCY_BUCKETS, NO_VERSION  # noqa: E402
from conveyor.traffic.builtin.router import PREVIEW_VERSION, BuiltinRouter  # noqa: E402

__all__ = [
    "LATENCY_BUCKETS",
    "NO_VERSION",
    "PREVIEW_VERSION",
    "BuiltinRouter",
    "RouterLimits",
    "RouterProcess",
]
