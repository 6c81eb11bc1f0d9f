"""Signing provenance at build time and checking it before a deploy runs anything.

The digest alone proves the bytes were not changed since they were *named*; it cannot prove
who named them. So each build signs its provenance statement with an ed25519 key that
Conveyor keeps in ``.conveyor/keys/``, wrapped in a DSSE envelope (the signature covers the
payload type too, so a signed blob cannot be replayed as another kind of document), and a
deploy refuses any artifact whose envelope is missing, signed by no trusted key, or about a
different digest.

Keys: ``signing.key`` is the one private key (PEM, mode 0600); every ``*.pub`` file is a
trusted public key. Rotation writes a new key pair and replaces ``signing.key`` atomically
while the old ``.pub`` stays, so artifacts signed before still verify; the retired private key
is gone, so it can sign nothing new. Trust is "a public key file is in the directory": adding
an external trust root later means adding a file, not changing this code.

Keys are created on first use with the same write-then-link trick as the artifact store, so
two first builds racing agree on one key.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from conveyor.artifacts import provenance
from conveyor.artifacts.store import ArtifactStore
from conveyor.errors import Refused

PAYLOAD_TYPE = "application/vnd.in-toto+json"
PRIVATE_NAME = "signing.key"


@dataclass(frozen=True)
class KeyInfo:
    """A public key as users see it: the fingerprint names it everywhere (envelopes, records)."""

    fingerprint: str  # "sha256:<hex of the raw 32-byte public key>"
    public_pem: str
    path: Path


@dataclass(frozen=True)
class Verified:
    """An artifact whose provenance checked out: the statement and the key that signed it."""

    digest: str
    key: str
    statement: Mapping[str, Any]


class Keyring:
    """The project's signing key and the public keys it trusts, all files in one directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @classmethod
    def of(cls, artifacts: ArtifactStore) -> Keyring:
        return cls(artifacts.state / "keys")

    @property
    def private_path(self) -> Path:
        return self.directory / PRIVATE_NAME

    def signing_key(self) -> Ed25519PrivateKey:
        """The current private key, created on first use."""
        if not self.private_path.is_file():
            self._install(Ed25519PrivateKey.generate(), replace=False)
        return _load_private(self.private_path)

    def current(self) -> KeyInfo:
        return self._info(self.signing_key().public_key())

    def rotate(self) -> tuple[KeyInfo, KeyInfo | None]:
        """Replace the signing key; return (new, previous). The previous stays trusted."""
        previous = (
            self._info(_load_private(self.private_path).public_key())
            if self.private_path.is_file()
            else None
        )
        new = Ed25519PrivateKey.generate()
        self._install(new, replace=True)
        return self._info(new.public_key()), previous

    def trusted(self) -> dict[str, Ed25519PublicKey]:
        """Every trusted public key by fingerprint: each ``*.pub`` and the signing key's own."""
        keys: dict[str, Ed25519PublicKey] = {}
        if not self.directory.is_dir():
            return keys
        for path in sorted(self.directory.glob("*.pub")):
            public = _load_public(path)
            keys[fingerprint(public)] = public
        if self.private_path.is_file():
            public = _load_private(self.private_path).public_key()
            keys[fingerprint(public)] = public
        return keys

    def trusted_infos(self) -> list[KeyInfo]:
        return [self._info(key) for key in self.trusted().values()]

    def _info(self, public: Ed25519PublicKey) -> KeyInfo:
        fp = fingerprint(public)
        return KeyInfo(fp, _public_pem(public), self._public_path(fp))

    def _public_path(self, fp: str) -> Path:
        return self.directory / f"{fp.removeprefix('sha256:')[:16]}.pub"

    def _install(self, key: Ed25519PrivateKey, *, replace: bool) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        public_path = self._public_path(fingerprint(key.public_key()))
        _write_atomic(public_path, _public_pem(key.public_key()).encode(), 0o644)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        fd, tmp_name = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".key")
        tmp = Path(tmp_name)  # mkstemp creates it 0600: never readable by others, not even once
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(pem)
                out.flush()
                os.fsync(out.fileno())
            if replace:
                tmp.replace(self.private_path)
                return
            try:
                os.link(tmp, self.private_path)
            except FileExistsError:  # another build created the key first: use theirs
                public_path.unlink(missing_ok=True)
        finally:
            tmp.unlink(missing_ok=True)


def fingerprint(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return f"sha256:{hashlib.sha256(raw).hexdigest()}"


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what the signature actually covers."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def sign_envelope(payload: bytes, key: Ed25519PrivateKey) -> dict[str, Any]:
    """A DSSE envelope of ``payload`` signed by ``key``."""
    signature = key.sign(pae(PAYLOAD_TYPE, payload))
    return {
        "payloadType": PAYLOAD_TYPE,
        "payload": base64.b64encode(payload).decode(),
        "signatures": [
            {"keyid": fingerprint(key.public_key()), "sig": base64.b64encode(signature).decode()}
        ],
    }


def sign_build(
    artifacts: ArtifactStore, facts: provenance.BuildFacts, keyring: Keyring | None = None
) -> dict[str, str]:
    """Sign and store ``facts``' provenance; a digest that has an envelope keeps its first one.

    Returns what the artifact record remembers: the envelope's path and the signing key.
    """
    keyring = keyring or Keyring.of(artifacts)
    key = keyring.signing_key()
    envelope = sign_envelope(provenance.encode(provenance.statement(facts)), key)
    path = artifacts.envelope_path(facts.digest)
    if artifacts.put_envelope(facts.digest, (json.dumps(envelope) + "\n").encode()):
        return {"envelope": str(path), "key": fingerprint(key.public_key())}
    return {"envelope": str(path), "key": _first_keyid(path)}


def verify_signed(
    artifacts: ArtifactStore, digest: str, keyring: Keyring | None = None
) -> Verified:
    """Check ``digest``'s provenance before it runs; raise Refused naming what is wrong.

    Passes when one envelope line carries a valid signature by a trusted key over an in-toto
    statement whose subject is ``digest``. The bytes themselves are ``ArtifactStore.verify``'s
    concern; call both.
    """
    keyring = keyring or Keyring.of(artifacts)
    path = artifacts.envelope_path(digest)
    hint = provenance.rebuild_hint(digest)
    if not path.is_file():
        raise Refused(
            f"artifact {digest} is unsigned: it has no provenance envelope ({path})", hint=hint
        )
    trusted = keyring.trusted()
    problems: list[str] = []
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            payload, key = open_envelope(json.loads(line), trusted)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            problems.append(str(exc) or type(exc).__name__)
            continue
        stmt = provenance.check_subject(payload, digest)
        return Verified(digest=digest, key=key, statement=stmt)
    raise Refused(
        f"artifact {digest} has no valid signature by a trusted key "
        f"({'; '.join(problems) or 'the envelope is empty'})",
        hint=hint + f"; trusted keys are the *.pub files in {keyring.directory}",
    )


def open_envelope(
    envelope: Mapping[str, Any], trusted: Mapping[str, Ed25519PublicKey]
) -> tuple[bytes, str]:
    """The payload and the trusted key whose signature over it is valid; ValueError if none."""
    if envelope.get("payloadType") != PAYLOAD_TYPE:
        raise ValueError(f"payload type {envelope.get('payloadType')!r}, not {PAYLOAD_TYPE}")
    payload = base64.b64decode(envelope["payload"], validate=True)
    message = pae(PAYLOAD_TYPE, payload)
    for signature in envelope.get("signatures") or []:
        sig = base64.b64decode(signature["sig"], validate=True)
        keyid = signature.get("keyid")
        # The keyid is only a hint: try the named key first, then every other trusted key.
        candidates = sorted(trusted.items(), key=lambda item: item[0] != keyid)
        for fp, public in candidates:
            with contextlib.suppress(InvalidSignature):
                public.verify(sig, message)
                return payload, fp
    raise ValueError("signed by no trusted key, or the signature does not match the payload")


def _first_keyid(path: Path) -> str:
    with contextlib.suppress(OSError, ValueError, KeyError, IndexError, TypeError):
        first = json.loads(path.read_text().splitlines()[0])
        return str(first["signatures"][0]["keyid"])
    return "unknown"


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        tmp.chmod(mode)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def _public_pem(public: Ed25519PublicKey) -> str:
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def _load_private(path: Path) -> Ed25519PrivateKey:
    key = _load(path, private=True)
    assert isinstance(key, Ed25519PrivateKey)
    return key


def _load_public(path: Path) -> Ed25519PublicKey:
    key = _load(path, private=False)
    assert isinstance(key, Ed25519PublicKey)
    return key


def _load(path: Path, *, private: bool) -> object:
    try:
        data = path.read_bytes()
        key: object = (
            serialization.load_pem_private_key(data, password=None)
            if private
            else serialization.load_pem_public_key(data)
        )
    except (OSError, ValueError, TypeError) as exc:
        raise Refused(
            f"key file {path} cannot be read: {exc}",
            hint="restore it from a backup, or remove it (a removed .pub is no longer trusted; "
            "a removed signing.key is replaced by a new one on the next build)",
        ) from exc
    expected = Ed25519PrivateKey if private else Ed25519PublicKey
    if not isinstance(key, expected):
        raise Refused(
            f"key file {path} does not hold an ed25519 {'private' if private else 'public'} key",
            hint="Conveyor signs with ed25519 only; remove the file or replace it",
        )
    return key
