"""The one port helper: a free TCP port on a local address, found by binding port 0.

The port is free when this returns and may be taken by anyone a moment later; callers
that need it to stay theirs (the store's address allocation, HAProxy's listeners) bind it
or record it right away and retry on a collision.
"""

from __future__ import annotations

import socket

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
