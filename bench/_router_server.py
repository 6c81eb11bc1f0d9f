"""Run the built-in router alone in its own process, under uvloop, for the benchmark.

Usage: python bench/_router_server.py LISTEN_PORT VERSION:WEIGHT:PORT [VERSION:WEIGHT:PORT ...]

Prints ``ready`` once listening, then serves until killed. With several versions the first
is the stable one (where the router supports it), as during a canary rollout.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import fields, replace

import uvloop

from conveyor.core.model import Backend, Pool, RouteTable
from conveyor.traffic.builtin import BuiltinRouter


async def _main(port: int, specs: list[str]) -> None:
    pools = []
    for spec in specs:
        version, weight, backend_port = spec.split(":")
        backend = Backend(f"{version}-0", "127.0.0.1", int(backend_port))
        pools.append(Pool(version, int(weight), (backend,)))
    router = BuiltinRouter()
    table = RouteTable(pools=tuple(pools))
    if len(pools) > 1 and any(f.name == "stable_version" for f in fields(RouteTable)):
        # a canary, as during a rollout: the first version is stable, the others' GETs are
        # held until their status is read (so that a 5xx could be answered by stable)
        table = replace(table, stable_version=pools[0].version)
    router.apply("bench", "bench", table)
    await router.serve("bench", "bench", "127.0.0.1", port, None)
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    uvloop.run(_main(int(sys.argv[1]), sys.argv[2:]))
