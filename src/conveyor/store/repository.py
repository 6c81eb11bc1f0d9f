"""``Store``, assembled: one mixin per topic, all on the transactions of ``base.StoreBase``.

Why the Store is shaped as it is (ordered writes, optimistic release updates, addresses kept
forever, observers told after the commit) is written down in ``base.py``; each topic's
operations live in the module named after it (``releases_repo.py``, ``tokens_repo.py``, ...),
so callers keep one object and one import while a reader opens only the topic they need.
"""

from __future__ import annotations

from conveyor.store.addresses_repo import AddressesRepo
from conveyor.store.artifacts_repo import ArtifactsRepo
from conveyor.store.base import AppendObserver
from conveyor.store.flags_repo import FlagsRepo
from conveyor.store.insight_repo import InsightRepo
from conveyor.store.keys_repo import KeysRepo
from conveyor.store.leases_repo import LeasesRepo
from conveyor.store.ledger_repo import LedgerRepo
from conveyor.store.releases_repo import ReleasesRepo
from conveyor.store.tokens_repo import TokensRepo

__all__ = ["AppendObserver", "Store"]


class Store(
    ArtifactsRepo,
    AddressesRepo,
    ReleasesRepo,
    TokensRepo,
    KeysRepo,
    LedgerRepo,
    FlagsRepo,
    InsightRepo,
    LeasesRepo,
):
    """The state database. Open with ``Store.open(url)``; close when done."""
