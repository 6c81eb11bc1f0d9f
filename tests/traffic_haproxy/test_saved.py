"""The book a router leaves for its successor: round trip, and the check before adopting."""

from __future__ import annotations

import pytest

from conveyor.traffic.haproxy.config import Listen
from conveyor.traffic.haproxy.plan import ServerSpec, Slot
from conveyor.traffic.haproxy.saved import SavedBook, SavedRoute, dump, load, matches, serving
from conveyor.traffic.haproxy.stats import StatRow, Tally

SPEC = ServerSpec("v1", "shop-prod-r1-abc", "127.0.0.1", 9001, 256)
BOOK = SavedBook(
    4242,
    (SavedRoute("shop", "prod", Listen("127.0.0.1", 8080), Listen("127.0.0.1", 8081)),),
    {
        "be.shop.prod": {
            "s1": Slot("s1", SPEC),
            "s2": Slot("s2", ServerSpec("v0", "old", "127.0.0.1", 9000, 0), draining=True),
            "s3": Slot("s3"),
        }
    },
)


def row(server: str, addr: str, weight: int) -> StatRow:
    return StatRow("be.shop.prod", server, "UP", 0, weight, Tally(), addr)


def test_a_book_survives_the_round_trip() -> None:
    assert load(dump(BOOK)) == BOOK


@pytest.mark.parametrize("text", ["", "[]", '{"worker": 1}', '{"worker": "x", "routes": []}'])
def test_anything_else_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        load(text)


def test_only_a_worker_that_looks_exactly_like_the_book_is_adopted() -> None:
    good = [row("s1", "127.0.0.1:9001", 256), row("s2", "127.0.0.1:9000", 0), row("s3", "x", 0)]
    assert matches(BOOK.slots, good)
    assert not matches(BOOK.slots, good[:2])  # a slot is missing
    assert not matches(BOOK.slots, [row("s1", "127.0.0.1:9001", 13), *good[1:]])  # weight
    assert not matches(BOOK.slots, [row("s1", "127.0.0.1:9999", 256), *good[1:]])  # address


def test_until_its_table_arrives_an_adopted_route_wants_what_it_serves() -> None:
    assert serving(BOOK.slots) == {"be.shop.prod": (SPEC,)}
