"""The HAProxy traffic router: Conveyor's routes, weights and drains on a real HAProxy.

One HAProxy master (master-worker mode) per router; weight and server changes go through
the runtime API without reloads; listeners change with graceful reloads. See ``router``
for the public object, ``plan`` for how tables become server weights and runtime
commands, ``headers`` for header routes, ``stats`` for the counters and ``latency`` for
per-request latencies.
"""

from conveyor.errors import HAProxyUnavailable
from conveyor.traffic.haproxy.config import Settings
from conveyor.traffic.haproxy.router import HAProxyRouter

__all__ = ["HAProxyRouter", "HAProxyUnavailable", "Settings"]
