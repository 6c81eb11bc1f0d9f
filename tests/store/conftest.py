"""Fixtures for the store suites: an opened Store on each configured database."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from conveyor.store import Store
from conveyor.store.engine import create_engine

from .helpers import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(database_url: str, clock: FakeClock) -> Iterator[Store]:
    with Store.open(database_url, clock=clock) as opened:
        yield opened


@pytest.fixture
def raw(database_url: str) -> Iterator[sa.Engine]:
    """Direct SQL access to the same database, for reaching behind the store's back."""
    engine = create_engine(database_url)
    yield engine
    engine.dispose()
