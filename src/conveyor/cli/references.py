"""Which release a person means: ``42``, ``SERVICE/ENV``, ``SERVICE/ENV@3``, ``@r3``, ``' r3'``.

The forms are `conveyor evidence`'s (``application/evidence.py`` parses them on the
server), and the API's approval routes take a release id, so the CLI turns a reference
into an id with the calls it already has: an id is taken as it is; a revision is looked up
in the history of SERVICE in ENV; ``SERVICE/ENV`` alone means the release there that the
command is about — the newest one waiting for approval (``approve``, ``reject``,
``show-approval``) or the newest with an open emergency review (``review``). Unknown
names come back from the server as errors with suggestions, as everywhere else.

The grammar is repeated here rather than imported because the CLI must not import the
application layer (the server's code, and its dependencies, on every invocation).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from conveyor.cli.client import ApiClient
from conveyor.errors import NotFound, UsageError

FORMS = "an id (42), SERVICE/ENV, SERVICE/ENV@3, SERVICE/ENV@r3 or 'SERVICE/ENV r3'"
_REFERENCE = re.compile(
    r"(?P<service>[^/\s@]+)/(?P<env>[^/\s@]+)(?:(?:@r?|\s+r)(?P<revision>[0-9]+))?"
)


@dataclass(frozen=True)
class Reference:
    text: str
    release_id: int | None = None
    service: str | None = None
    env: str | None = None
    revision: int | None = None


def parse(text: str) -> Reference:
    stripped = text.strip()
    if stripped.isdigit():
        return Reference(text, release_id=int(stripped))
    match = _REFERENCE.fullmatch(stripped)
    if match is None:
        raise UsageError(f"'{text}' is not a release reference", hint=f"name a release as {FORMS}")
    revision = match.group("revision")
    return Reference(
        text,
        service=match.group("service"),
        env=match.group("env"),
        revision=int(revision) if revision is not None else None,
    )


Newest = Callable[[ApiClient, str, str], int | None]
"""The id of the release ``SERVICE/ENV`` alone means for a command, or None."""


def release_id(client: ApiClient, text: str, newest: Newest, *, what: str) -> int:
    """The id of the release ``text`` names; ``what`` says what SERVICE/ENV looks for."""
    ref = parse(text)
    if ref.release_id is not None:
        return ref.release_id
    assert ref.service is not None and ref.env is not None
    if ref.revision is not None:
        return _by_revision(client, ref.service, ref.env, ref.revision)
    found = newest(client, ref.service, ref.env)
    if found is None:
        # The names may be wrong rather than the wait empty: history checks both.
        client.get("/api/v1/history", service=ref.service, env=ref.env, limit=1)
        raise NotFound(
            f"nothing of {ref.service} in {ref.env} {what}",
            hint=f"name the release ({FORMS}); `conveyor approvals` lists what waits",
        )
    return found


def newest_waiting(client: ApiClient, service: str, env: str) -> int | None:
    waiting: list[Mapping[str, Any]] = client.get("/api/v1/approvals")["approvals"]
    ids = [
        int(item["release"]["id"])
        for item in waiting
        if item["release"]["service"] == service and item["release"]["env"] == env
    ]
    return max(ids, default=None)


def newest_open_review(client: ApiClient, service: str, env: str) -> int | None:
    rows: list[Mapping[str, Any]] = client.get("/api/v1/status", env=env)["services"]
    ids = [
        int(review["id"])
        for row in rows
        if row["service"] == service
        for review in row.get("open_reviews") or ()
    ]
    return max(ids, default=None)


def _by_revision(client: ApiClient, service: str, env: str, revision: int) -> int:
    releases = client.get("/api/v1/history", service=service, env=env, limit=1000)["releases"]
    for release in releases:
        if release["revision"] == revision:
            return int(release["id"])
    raise NotFound(
        f"{service}/{env} has no release r{revision}",
        hint=f"list them with `conveyor history {service} --env {env}`",
    )
