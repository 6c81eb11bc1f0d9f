"""Dashboard sign-in: a token typed once, a session cookie after, a CSRF token per form.

The browser never holds the token itself: signing in trades it for a random session id in
a cookie that scripts cannot read (HttpOnly), that no other site's page sends
(SameSite=Strict), that travels only over TLS when the server has it (Secure), and whose
path is the dashboard's, so it never reaches the API. The token stays in the server's
memory and is authenticated again on every request, so revoking it (`conveyor tokens
revoke`) signs its sessions out at once. A restarted server forgets every session: people
sign in again.

Forms are protected twice: the Host/Origin guard refuses a page elsewhere, and every POST
carries the session's CSRF token (compared in constant time); the sign-in form, before any
session exists, uses a double-submit cookie.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

COOKIE = "conveyor_session"
LOGIN_COOKIE = "conveyor_login"
COOKIE_PATH = "/ui"
IDLE = 8 * 3600.0
"""A session unused this long is forgotten."""
LIFETIME = 24 * 3600.0
"""A session ends this long after sign-in, used or not."""
MAX_SESSIONS = 10_000


@dataclass
class Session:
    id: str
    secret: str  # the token, only ever in memory
    csrf: str
    created: float
    seen: float


@dataclass
class Sessions:
    clock: Callable[[], float] = time.time
    _items: OrderedDict[str, Session] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def open(self, secret: str) -> Session:
        now = self.clock()
        session = Session(secrets.token_urlsafe(32), secret, secrets.token_urlsafe(32), now, now)
        with self._lock:
            self._items[session.id] = session
            while len(self._items) > MAX_SESSIONS:
                self._items.popitem(last=False)  # the least recently used goes first
        return session

    def get(self, session_id: str | None) -> Session | None:
        if not session_id or len(session_id) > 100:
            return None
        now = self.clock()
        with self._lock:
            session = self._items.get(session_id)
            if session is None:
                return None
            if now - session.seen > IDLE or now - session.created > LIFETIME:
                del self._items[session_id]
                return None
            session.seen = now
            self._items.move_to_end(session_id)
            return session

    def close(self, session_id: str | None) -> None:
        with self._lock:
            if session_id:
                self._items.pop(session_id, None)

    def __len__(self) -> int:
        return len(self._items)


def same(expected: str | None, given: str | None) -> bool:
    """Constant-time comparison of two CSRF tokens; a missing one never matches."""
    if not expected or not given or len(given) > 200:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


def cookie_header(
    name: str, value: str, *, secure: bool, max_age: int | None = None, path: str = COOKIE_PATH
) -> str:
    """A ``Set-Cookie`` value: HttpOnly, SameSite=Strict, Secure over TLS, the dashboard's
    path; ``max_age=0`` deletes it."""
    parts = [f"{name}={value}", f"Path={path}", "HttpOnly", "SameSite=Strict"]
    if secure:
        parts.append("Secure")
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
    return "; ".join(parts)
