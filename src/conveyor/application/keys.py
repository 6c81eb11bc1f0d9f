"""The server's keys: trust pinned in the store, and the key moved out of the project tree.

Until 0.2 the signing key lived in ``.conveyor/keys/`` and every ``*.pub`` file there was
trusted — readable, and extensible, by every job and instance running as the same user. A
job that read the key could sign "gates passed" and unlock production. Now:

* the key lives in the server's key directory, outside the tree (``Layout.server_keys``);
* trust is pinned in the store (``StoreTrust``), each change on the ledger;
* at the first start after the upgrade, ``move_legacy_keys`` pins every key found in the
  old directory as *retired now* — it still vouches for the artifacts recorded before, and
  for nothing new — and removes the old directory, private key included.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from conveyor.artifacts.signing import KeyInfo, Keyring, TrustedKey, fingerprint, public_pem
from conveyor.layout import Layout
from conveyor.store.records import NewEvent
from conveyor.store.repository import Store

log = logging.getLogger("conveyor.keys")

WITNESS = "ledger-witness.json"


@dataclass
class StoreTrust:
    """``KeyTrust`` on the state store: pins and retirements are ledger events."""

    store: Store
    clock: Callable[[], float]
    actor: str = "conveyor"

    def pinned(self) -> Sequence[TrustedKey]:
        return [
            TrustedKey(k.fingerprint, k.public_pem, k.retired_at) for k in self.store.pinned_keys()
        ]

    def pin(
        self, key: KeyInfo, *, retired_at: float | None = None, note: str | None = None
    ) -> None:
        self.store.pin_key(
            key.fingerprint, key.public_pem, actor=self.actor, retired_at=retired_at, note=note
        )

    def retire(self, fingerprint: str) -> None:
        self.store.retire_key(fingerprint, at=self.clock(), actor=self.actor)


def move_legacy_keys(
    layout: Layout, keyring: Keyring, store: Store, clock: Callable[[], float]
) -> None:
    """Retire the keys of ``.conveyor/keys`` (readable by jobs until now) and remove them."""
    legacy = layout.legacy_keys
    if not legacy.is_dir() or keyring.trust is None:
        return
    old = Keyring(legacy)  # the old rules: every .pub there, and the private key's own
    now = clock()
    retired: list[str] = []
    for public in old.trusted().values():
        info = KeyInfo(fingerprint(public), public_pem(public), legacy)
        keyring.trust.pin(info, retired_at=now, note="moved out of the project tree on upgrade")
        retired.append(info.fingerprint)
    keyring.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    witness = legacy / WITNESS
    if witness.is_file() and not (keyring.directory / WITNESS).exists():
        witness.replace(keyring.directory / WITNESS)
    current = keyring.current()  # a new key, pinned, in the new place
    shutil.rmtree(legacy, ignore_errors=True)
    store.append_events(
        [
            NewEvent(
                "keys.moved",
                {
                    "retired": retired,
                    "key": current.fingerprint,
                    "directory": str(keyring.directory),
                },
            )
        ],
        actor="conveyor",
    )
    log.warning(
        "moved the signing key out of the project tree to %s; %d old key(s) now vouch only "
        "for artifacts recorded before this start",
        keyring.directory,
        len(retired),
    )
