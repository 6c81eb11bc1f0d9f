"""A test backend in its own process (so it can be SIGKILLed): prints its port, then serves.

Usage: python _backend_proc.py VERSION
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import uvloop
from _support import TestBackend


async def main(version: str) -> None:
    backend = await TestBackend(version).start()
    print(backend.port, flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    uvloop.run(main(sys.argv[1]))
