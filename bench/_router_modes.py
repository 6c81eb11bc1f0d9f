"""The built-in router as a server runs it, before and after it moved to its own process.

Usage: python bench/_router_modes.py MODE LISTEN_PORT STATE_DIR VERSION:WEIGHT:PORT [...]

  inproc   the router on this process's uvloop (how ``conveyor server`` ran it), with a
           driver-like task reading its counters and an instance's in-flight count every
           100 ms on the same loop, as a driver tick does
  process  the router process (``python -m conveyor.traffic.builtin.daemon``) started and
           driven by ``RouterProcess`` from this process, with the same 100 ms reads over
           the control socket, plus the client's own supervision pings

Prints ``ready PID`` once serving, PID being the process whose CPU time is the router's
(this one for inproc, the router process for process); then serves until killed.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import uvloop

from conveyor.core.model import Backend, Pool, RouteTable
from conveyor.traffic.base import TrafficRouter
from conveyor.traffic.builtin import BuiltinRouter, RouterProcess


async def _main(mode: str, port: int, state: Path, specs: list[str]) -> None:
    pools = []
    for spec in specs:
        version, weight, backend_port = spec.split(":")
        backend = Backend(f"{version}-0", "127.0.0.1", int(backend_port))
        pools.append(Pool(version, int(weight), (backend,)))
    router: TrafficRouter
    if mode == "inproc":
        router = BuiltinRouter()
        await router.serve("bench", "bench", "127.0.0.1", port, None)
        pid = str(__import__("os").getpid())
    else:
        router = RouterProcess(state)
        await router.serve("bench", "bench", "127.0.0.1", port, None)
        pid = str(router.pid)
    router.apply("bench", "bench", RouteTable(pools=tuple(pools)))
    print("ready", pid, flush=True)
    while True:  # what a driver reads every tick
        await asyncio.sleep(0.1)
        router.counters("bench", "bench")
        router.in_flight("bench", "bench", "v1-0")


if __name__ == "__main__":
    uvloop.run(_main(sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), sys.argv[4:]))
