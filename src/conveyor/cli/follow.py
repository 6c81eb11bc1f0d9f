"""Following a release through the API until its rollout is over.

`deploy --wait` prints each ledger event as it lands; a pipeline's deploy job writes them to
its log and stops early when the run is cancelled. Both poll the same two endpoints
(`GET /api/v1/events?release=ID&after=SEQ`, then `GET /api/v1/releases/ID`) at the same
pace, so the loop is written once, here, and each caller says what to do with an event.

A release to an approval-gated environment first waits for people (``pending_approval``);
that wait ends with the rollout starting, or with the release ``rejected`` or ``cancelled``
(expired, withdrawn, replaced by a newer deploy) — both final, like a rollout's end. The
time spent waiting for people may be left out of ``timeout`` (``deploy --wait`` does): the
approval's own expiry bounds it, and a rollout's deadline should not run while nobody has
said yes yet.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from conveyor.cli.client import ApiClient

FINAL_PHASES = ("succeeded", "rolled_back", "failed", "rejected", "cancelled")
WAITING_FOR_PEOPLE = "pending_approval"
POLL = 0.25


def follow(
    client: ApiClient,
    release: Mapping[str, Any],
    *,
    on_event: Callable[[Mapping[str, Any]], None],
    on_poll: Callable[[Mapping[str, Any]], None] | None = None,
    cancelled: threading.Event | None = None,
    timeout: float = 3600.0,
    people_excluded: bool = False,
) -> Mapping[str, Any]:
    """The release as it stands when its rollout ended, the caller cancelled, or time ran out.

    ``people_excluded``: time the release spends waiting for approval does not count
    against ``timeout``.
    """
    stop = cancelled or threading.Event()
    after = 0
    current: Mapping[str, Any] = release
    deadline = time.monotonic() + timeout
    while not stop.is_set() and time.monotonic() < deadline:
        for event in client.get("/api/v1/events", release=release["id"], after=after)["events"]:
            after = event["seq"]
            on_event(event)
        current = client.get(f"/api/v1/releases/{release['id']}")
        if on_poll is not None:
            on_poll(current)
        if current["phase"] in FINAL_PHASES:
            break
        if people_excluded and current["phase"] == WAITING_FOR_PEOPLE:
            deadline = time.monotonic() + timeout  # the rollout's time starts when it does
        stop.wait(POLL)
    return current
