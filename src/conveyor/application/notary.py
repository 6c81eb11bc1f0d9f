"""The notary: the one seam between the ledger and wherever the server's key lives.

Checkpoints need three things from the key's keeper: sign a statement, open a signed one
against the keys it trusts, and remember the last checkpoint it signed. The last one is the
*witness*: a row can be deleted by anyone who can write the database, so the server also
keeps its newest checkpoint beside its key, where that person cannot reach. A chain
recomputed after the checkpoint rows were deleted still fails, because the witness
disagrees with it.

``KeyringNotary`` keeps all of it in the ``Keyring``'s directory (today ``.conveyor/keys``).
When the key moves (out of the project tree, into an agent or a KMS) a new notary takes its
place and nothing in the ledger code changes; the witness moves with the key because it is
exactly as safe as the key.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from conveyor.artifacts.signing import Keyring, open_envelope, sign_envelope
from conveyor.layout import private_file

WITNESS_NAME = "ledger-witness.json"

log = logging.getLogger("conveyor.ledger")

Open = Callable[[Mapping[str, Any]], tuple[bytes, str]]
"""An envelope in, (payload, fingerprint of the trusted key that signed it) out; ValueError
if no trusted key signed it."""


class Notary(Protocol):
    def sign(self, payload_type: str, payload: bytes) -> dict[str, Any]:
        """A DSSE envelope of ``payload`` under ``payload_type``, signed by the current key."""
        ...

    def opener(self, payload_type: str) -> Open:
        """Opens envelopes of ``payload_type`` against the keys trusted now."""
        ...

    def remember(self, envelope: Mapping[str, Any]) -> None:
        """Keep ``envelope`` as the last checkpoint signed (the witness)."""
        ...

    def last(self) -> Mapping[str, Any] | None:
        """The witness, if there is one."""
        ...


class KeyringNotary:
    """The notary of a ``Keyring``: its signing key, its trusted keys, a witness beside them."""

    def __init__(self, keyring: Keyring) -> None:
        self.keyring = keyring

    @property
    def witness(self) -> Path:
        return self.keyring.directory / WITNESS_NAME

    def sign(self, payload_type: str, payload: bytes) -> dict[str, Any]:
        return sign_envelope(payload, self.keyring.signing_key(), payload_type=payload_type)

    def opener(self, payload_type: str) -> Open:
        trusted = self.keyring.trusted()

        def open_(envelope: Mapping[str, Any]) -> tuple[bytes, str]:
            return open_envelope(envelope, trusted, payload_type=payload_type)

        return open_

    def remember(self, envelope: Mapping[str, Any]) -> None:
        private_file(self.witness, json.dumps(dict(envelope), sort_keys=True))

    def last(self) -> Mapping[str, Any] | None:
        try:
            data = json.loads(self.witness.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("the ledger witness %s cannot be read (%s); ignoring it", self.witness, exc)
            return None
        return data if isinstance(data, dict) else None
