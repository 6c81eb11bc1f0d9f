"""Dashboard parts without a server: sessions, CSRF tokens, cookies, template parts."""

from __future__ import annotations

import pytest

from conveyor.server.dashboard import sessions
from conveyor.server.dashboard.sessions import Sessions, cookie_header, same


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_session_ends_when_idle_or_old() -> None:
    clock = Clock()
    store = Sessions(clock)
    idle = store.open("cvy_a")
    clock.now += sessions.IDLE + 1
    assert store.get(idle.id) is None

    busy = store.open("cvy_b")
    for _ in range(int(sessions.LIFETIME // 3600) - 1):
        clock.now += 3600
        assert store.get(busy.id) is not None  # used every hour: still there
    clock.now += 7200
    assert store.get(busy.id) is None  # a day after sign-in, used or not


def test_the_least_recently_used_session_goes_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sessions, "MAX_SESSIONS", 3)
    store = Sessions(Clock())
    first, second, third = (store.open(f"cvy_{n}") for n in range(3))
    assert store.get(first.id) is not None  # first is now the most recent
    store.open("cvy_new")
    assert len(store) == 3
    assert store.get(second.id) is None and store.get(first.id) is not None
    assert store.get(third.id) is not None


def test_sessions_are_unguessable_and_closable() -> None:
    store = Sessions(Clock())
    a, b = store.open("cvy_a"), store.open("cvy_a")
    assert a.id != b.id and a.csrf != b.csrf and len(a.id) >= 43
    store.close(a.id)
    assert store.get(a.id) is None and store.get(b.id) is not None
    assert store.get(None) is None and store.get("x" * 500) is None


@pytest.mark.parametrize(
    ("expected", "given", "ok"),
    [
        ("abc", "abc", True),
        ("abc", "abd", False),
        ("abc", None, False),
        (None, None, False),
        ("", "", False),
        ("abc", "abc" * 100, False),
    ],
)
def test_csrf_tokens_match_exactly(expected: str | None, given: str | None, ok: bool) -> None:
    assert same(expected, given) is ok


def test_cookies_are_http_only_strict_and_secure_over_tls() -> None:
    plain = cookie_header("conveyor_session", "v", secure=False)
    assert plain == "conveyor_session=v; Path=/ui; HttpOnly; SameSite=Strict"
    assert cookie_header("c", "v", secure=True, max_age=0).endswith("; Secure; Max-Age=0")


def test_the_migrations_part_shows_class_undo_and_lint() -> None:
    """The approval and release pages' migrations section, from the evidence's shape."""
    from conveyor.server.dashboard.routes import environment

    report = {
        "runs": True,
        "command": ["alembic", "upgrade", "head"],
        "database": "shop",
        "undo_command": None,
        "rollback_horizon": {"releases": 2, "age": None},
        "lint_note": None,
        "migrations": [
            {
                "id": "0007_add_sku",
                "file": "migrations/0007.py",
                "class": "expand",
                "declared": "expand",
                "inferred": "expand",
                "why": ["adds a nullable column"],
                "undo": "ALTER TABLE items DROP COLUMN sku",
                "completes": [],
                "lint": [],
            },
            {
                "id": "0008_drop_name",
                "file": None,
                "class": "contract",
                "declared": None,
                "inferred": "contract",
                "why": ["drops a column"],
                "undo": None,
                "completes": ["0006_copy_name"],
                "lint": [{"rule": "ban-drop-column", "message": "dropping a column"}],
            },
        ],
    }
    html = environment().get_template("migrations.html").render(migrations=report, UI="/ui")
    assert "alembic upgrade head" in html and "against shop" in html
    assert "0007_add_sku" in html and "clean" in html and "ALTER TABLE items" in html
    assert "ban-drop-column dropping a column" in html and "completes 0006_copy_name" in html
    assert environment().get_template("migrations.html").render(migrations=None).strip() == ""
