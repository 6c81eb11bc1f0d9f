"""Who may call a route: the explicit rule every route of the API and the dashboard carries.

A route without a ``Rule`` fails ``routes_without_rules`` (and tests/server/test_access.py,
which lists every rule), so opening a door is always a deliberate, reviewed change. The
permission is checked again, per environment, by the application layer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from conveyor.application.access import Permission


@dataclass(frozen=True)
class Rule:
    """What a route needs: a permission, or nothing (``PUBLIC``: the health check, the
    dashboard's sign-in page and its static files, and metrics when the project says so)."""

    permission: Permission | None


PUBLIC = Rule(None)
READ = Rule(Permission.READ)
PUBLISH = Rule(Permission.PUBLISH)
DEPLOY = Rule(Permission.DEPLOY)
APPROVE = Rule(Permission.APPROVE)
ADMIN = Rule(Permission.ADMIN)

Handler = Callable[[Request], Awaitable[Response]]


def with_rule(endpoint: Handler, rule: Rule, name: str) -> Handler:
    """``endpoint`` with ``rule`` pinned where ``routes_without_rules`` and the tests look."""

    async def ruled(request: Request) -> Response:
        return await endpoint(request)

    ruled.rule = rule  # type: ignore[attr-defined]
    ruled.__name__ = name
    return ruled
