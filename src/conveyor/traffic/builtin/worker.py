"""A worker process of the router: ``python -m conveyor.traffic.builtin.worker --fd K``.

Started by the router process (``workers.WorkerPool``) when it runs with ``--workers N``:
a ``BuiltinRouter`` on its own uvloop, listening with ``SO_REUSEPORT`` on the ports the
router process opened first, so the kernel gives it a share of their new connections.

Descriptor K is its end of a socketpair with the router process, and its only channel:
line-JSON commands (``control.encode``/``decode``) ``serve``, ``apply``, ``in_flight``,
``samples``, ``series``, ``ping``, ``stop``, each answered once with the command's ``id``.
There is no handshake and no secret, on purpose: a socketpair has no name in the file
system, so nobody but the two processes holding its ends can write on it.

It keeps no files and decides nothing: what it serves is what the router process replays
and pushes. So it must not outlive that process. When the socket reaches EOF (the router
process exited, even by SIGKILL) the worker closes its listeners at once, lets its
in-flight requests finish (the router's close grace, 5 s), and exits; likewise on ``stop``
and on SIGTERM. SIGINT is ignored: a Ctrl-C in a terminal reaches the whole process group,
and the router process, which gets it too, stops its workers in order. Exit status 0 after
a stop, 2 when it could not start.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from typing import Any

from conveyor.errors import ConveyorError
from conveyor.traffic.builtin import control
from conveyor.traffic.builtin.router import BuiltinRouter

log = logging.getLogger("conveyor.router.worker")

CANNOT_START = 2
_MAX_NAME = 200


class Worker:
    """Answers the router process's commands with its own ``BuiltinRouter``."""

    def __init__(self, router: BuiltinRouter) -> None:
        self.router = router
        self.stopping = asyncio.Event()

    async def converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answer commands until EOF or ``stop``; then ask the worker to stop."""
        writer.write(
            control.encode({"ready": True, "pid": os.getpid(), "version": control.PROTOCOL})
        )
        try:
            while not self.stopping.is_set():
                line = await reader.readline()
                if not line:
                    log.info("worker %d: the router process is gone; stopping", os.getpid())
                    break
                try:
                    message = control.decode(line)
                    answer = await self.answer(message)
                    answer["id"] = message.get("id")
                except control.ProtocolError as exc:
                    answer = {"ok": False, "error": str(exc), "kind": "ProtocolError"}
                writer.write(control.encode(answer))
                await writer.drain()
        except (OSError, ValueError):  # reset, or a line past the limit: the same as EOF
            pass
        finally:
            self.stopping.set()

    async def answer(self, message: dict[str, Any]) -> dict[str, Any]:
        op = message.get("op")
        try:
            if op == "ping":
                return {"ok": True, "pid": os.getpid()}
            if op == "stop":
                self.stopping.set()
                return {"ok": True}
            if op == "series":
                return {
                    "ok": True,
                    "series": [control.series_to_wire(s) for s in self.router.series()],
                }
            service, env = _name(message, "service"), _name(message, "env")
            if op == "serve":
                port, preview_port = message.get("port"), message.get("preview_port")
                if not isinstance(port, int) or not (
                    preview_port is None or isinstance(preview_port, int)
                ):
                    raise control.ProtocolError("serve needs integer ports")
                await self.router.serve(service, env, _name(message, "host"), port, preview_port)
                return {"ok": True}
            if op == "apply":
                self.router.apply(service, env, control.table_from_wire(message.get("table")))
                return {"ok": True}
            if op == "in_flight":
                count = self.router.in_flight(service, env, _name(message, "instance"))
                return {"ok": True, "count": count}
            if op == "samples":
                samples = self.router.latency_samples(service, env, _name(message, "version"))
                return {"ok": True, "samples": list(samples)}
        except ConveyorError as exc:
            return {"ok": False, "error": exc.message, "hint": exc.hint, "kind": type(exc).__name__}
        return {"ok": False, "error": f"unknown op {str(op)[:40]!r}", "kind": "ProtocolError"}


def _name(message: dict[str, Any], field: str) -> str:
    value = message.get(field)
    if not isinstance(value, str) or not value or len(value) > _MAX_NAME:
        raise control.ProtocolError(f"{field} must be a non-empty string of <= {_MAX_NAME}")
    return value


async def run(fd: int) -> int:
    try:
        sock = socket.socket(fileno=fd)
        reader, writer = await asyncio.open_unix_connection(sock=sock, limit=control.MAX_LINE)
    except (OSError, ValueError) as exc:
        log.error("worker %d: no socket to the router process on fd %d: %s", os.getpid(), fd, exc)
        return CANNOT_START
    worker = Worker(BuiltinRouter(reuse_port=True))
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, worker.stopping.set)
    conversation = loop.create_task(worker.converse(reader, writer))
    await worker.stopping.wait()
    await worker.router.close()  # listeners at once, then in-flight requests get the grace
    conversation.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await conversation
    writer.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    # Before anything else: a Ctrl-C meant for the router process must not kill us mid-boot.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    parser = argparse.ArgumentParser(
        prog="conveyor-router-worker", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--fd", type=int, required=True, help="its end of the socketpair")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=os.environ.get("CONVEYOR_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on supported platforms
        return asyncio.run(run(args.fd))
    return int(uvloop.run(run(args.fd)))


if __name__ == "__main__":
    sys.exit(main())
