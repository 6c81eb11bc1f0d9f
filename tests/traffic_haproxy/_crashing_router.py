"""A Conveyor process that serves a route through HAProxy and then dies without cleaning up.

Usage: python _crashing_router.py STATE_DIR BACKEND_PORT
Prints the listener port and the HAProxy master pid, then exits with os._exit: HAProxy
keeps serving, exactly as after a crash of ``conveyor server``.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from conveyor.core.model import Backend, Pool, RouteTable
from conveyor.traffic.haproxy import HAProxyRouter


async def main(state_dir: Path, backend_port: int) -> None:
    router = HAProxyRouter(state_dir, haproxy="/usr/sbin/haproxy")
    await router.serve("shop", "prod", "127.0.0.1", 0, None)
    backend = Backend(f"v1-{backend_port}", "127.0.0.1", backend_port)
    router.apply("shop", "prod", RouteTable(pools=(Pool("v1", 100, (backend,)),)))
    print(router.bound_port("shop", "prod"), router.master_pid, flush=True)
    os._exit(0)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2])))
