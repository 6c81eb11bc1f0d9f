"""Conveyor's state: artifacts, releases, stable addresses and the hash-chained ledger.

The only package that imports SQLAlchemy. Everything it returns is a frozen record from
``records.py``; open it with ``Store.open(default_url(project_root))``.
"""

from conveyor.store.engine import default_url, normalize_url
from conveyor.store.ledger import GENESIS
from conveyor.store.records import (
    AddressRecord,
    ArtifactRecord,
    Checkpoint,
    CheckpointRecord,
    EventRecord,
    LedgerCheck,
    NewEvent,
    NewRelease,
    ReleaseRecord,
)
from conveyor.store.repository import Store

__all__ = [
    "GENESIS",
    "AddressRecord",
    "ArtifactRecord",
    "Checkpoint",
    "CheckpointRecord",
    "EventRecord",
    "LedgerCheck",
    "NewEvent",
    "NewRelease",
    "ReleaseRecord",
    "Store",
    "default_url",
    "normalize_url",
]
