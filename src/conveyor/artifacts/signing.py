"""Signing provenance at build time and checking it before a deploy runs anything.

The digest alone proves the bytes were not changed since they were *named*; it cannot prove
who named them. So the server signs each artifact's provenance statement with an ed25519 key
of its own, wrapped in a DSSE envelope (the signature covers the payload type too, so a
signed blob cannot be replayed as another kind of document), and a deploy refuses any
artifact whose envelope is missing, signed by no trusted key, or about a different digest.

Keys: ``signing.key`` is the one private key (PEM, mode 0600) in the server's key directory,
outside the project tree (``Layout.server_keys``) where no job or instance working in the
tree can read it. Which public keys are trusted is *pinned* (``KeyTrust``: the store, for the
server): a key is trusted because the server made it or an admin added it, never because a
file appeared somewhere. Rotation installs a new key and retires the old one, which from
then on vouches only for artifacts recorded before it was retired — whoever could read the
old key cannot vouch for anything new with it. Without a ``KeyTrust`` (tools and tests
working on a bare directory) every ``*.pub`` file beside the key is trusted, as before.

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

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


@dataclass(frozen=True)
class TrustedKey:
    """A pinned public key; a retired one vouches only for what was recorded before."""

    fingerprint: str
    public_pem: str
    retired_at: float | None = None

    def vouches_for(self, recorded_at: float | None) -> bool:
        if self.retired_at is None:
            return True
        return recorded_at is not None and recorded_at < self.retired_at


class KeyTrust(Protocol):
    """Where trusted keys are pinned (the server: its store, on the ledger)."""

    def pinned(self) -> Sequence[TrustedKey]: ...

    def pin(
        self, key: KeyInfo, *, retired_at: float | None = None, note: str | None = None
    ) -> None: ...

    def retire(self, fingerprint: str) -> None: ...


class Keyring:
    """The server's signing key, and the public keys it trusts."""

    def __init__(self, directory: Path, trust: KeyTrust | None = None) -> None:
        self.directory = directory
        self.trust = trust
        self._pinned: str | None = None

    @classmethod
    def of(cls, artifacts: ArtifactStore) -> Keyring:
        return cls(artifacts.layout.server_keys)

    @property
    def private_path(self) -> Path:
        return self.directory / PRIVATE_NAME

    def signing_key(self) -> Ed25519PrivateKey:
        """The current private key, created (and pinned) on first use."""
        if not self.private_path.is_file():
            self._install(Ed25519PrivateKey.generate(), replace=False)
        key = _load_private(self.private_path)
        if self.trust is not None:
            info = self._info(key.public_key())
            if self._pinned != info.fingerprint:
                self.trust.pin(info, note="the server's signing key")
                self._pinned = info.fingerprint
        return key

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
        info = self._info(new.public_key())
        if self.trust is not None:
            self.trust.pin(info, note="rotated in")
            self._pinned = info.fingerprint
            if previous is not None:
                self.trust.retire(previous.fingerprint)
        return info, previous

    def trusted(self, recorded_at: float | None = None) -> dict[str, Ed25519PublicKey]:
        """Every key that vouches for something recorded at ``recorded_at`` (None: now).

        Pinned keys when there is a ``KeyTrust``: the active ones, and retired ones for what
        was recorded before they were retired. Otherwise each ``*.pub`` beside the key and
        the signing key's own.
        """
        if self.trust is not None:
            self.signing_key()  # the current key is pinned before anything is verified
            return {
                key.fingerprint: _public_from_pem(key.public_pem)
                for key in self.trust.pinned()
                if key.vouches_for(recorded_at)
            }
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

    def pinned(self) -> Sequence[TrustedKey]:
        """Every pinned key, retired ones included (empty without a ``KeyTrust``)."""
        return list(self.trust.pinned()) if self.trust is not None else []

    def _info(self, public: Ed25519PublicKey) -> KeyInfo:
        fp = fingerprint(public)
        return KeyInfo(fp, public_pem(public), self._public_path(fp))

    def _public_path(self, fp: str) -> Path:
        return self.directory / f"{fp.removeprefix('sha256:')[:16]}.pub"

    def _install(self, key: Ed25519PrivateKey, *, replace: bool) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        public_path = self._public_path(fingerprint(key.public_key()))
        _write_atomic(public_path, public_pem(key.public_key()).encode(), 0o644)
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


def sign_envelope(
    payload: bytes, key: Ed25519PrivateKey, *, payload_type: str = PAYLOAD_TYPE
) -> dict[str, Any]:
    """A DSSE envelope of ``payload`` signed by ``key``.

    ``payload_type`` is covered by the signature: a ledger checkpoint is signed under its
    own type, so it can never be opened as provenance, nor provenance as a checkpoint.
    """
    signature = key.sign(pae(payload_type, payload))
    return {
        "payloadType": payload_type,
        "payload": base64.b64encode(payload).decode(),
        "signatures": [
            {"keyid": fingerprint(key.public_key()), "sig": base64.b64encode(signature).decode()}
        ],
    }


def sign_build(
    artifacts: ArtifactStore, facts: provenance.BuildFacts, keyring: Keyring | None = None
) -> dict[str, str]:
    """Sign and store ``facts``' provenance, once per (digest, service).

    The first envelope of a digest is written with the archive's write-then-link guarantee;
    a further service built to the same bytes appends its own statement, and a service that
    already has one keeps it. Returns what the artifact record remembers: the envelope's
    path and the key that signed this service's statement.
    """
    keyring = keyring or Keyring.of(artifacts)
    path = artifacts.envelope_path(facts.digest)
    existing = _keyid_for(path, facts.service)
    if existing is not None:
        return {"envelope": str(path), "key": existing}
    key = keyring.signing_key()
    line = json.dumps(sign_envelope(provenance.encode(provenance.statement(facts)), key)) + "\n"
    if not artifacts.put_envelope(facts.digest, line.encode()):
        existing = _keyid_for(path, facts.service)
        if existing is not None:  # a concurrent build of the same service won the race
            return {"envelope": str(path), "key": existing}
        artifacts.append_envelope(facts.digest, line.encode())
    return {"envelope": str(path), "key": fingerprint(key.public_key())}


def verify_signed(
    artifacts: ArtifactStore,
    digest: str,
    keyring: Keyring | None = None,
    *,
    service: str | None = None,
    recorded_at: float | None = None,
) -> Verified:
    """Check ``digest``'s provenance before it runs; raise Refused naming what is wrong.

    Passes when one envelope line carries a valid signature by a trusted key over an in-toto
    statement whose subject is ``digest`` (built for ``service``, when one is named: the
    bytes of ``web`` are not vouched for as ``worker`` by ``web``'s provenance). The bytes
    themselves are ``ArtifactStore.verify``'s concern; call both.
    """
    keyring = keyring or Keyring.of(artifacts)
    path = artifacts.envelope_path(digest)
    hint = provenance.rebuild_hint(digest)
    if not path.is_file():
        raise Refused(
            f"artifact {digest} is unsigned: it has no provenance envelope ({path})", hint=hint
        )
    trusted = keyring.trusted(recorded_at)
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
        if service is not None and subject_service(stmt) != service:
            problems.append(f"a statement for {subject_service(stmt)!r}")
            continue
        return Verified(digest=digest, key=key, statement=stmt)
    whose = f" for service '{service}'" if service is not None else ""
    raise Refused(
        f"artifact {digest} has no valid signature by a trusted key{whose} "
        f"({'; '.join(problems) or 'the envelope is empty'})",
        hint=hint + "; see the trusted keys with `conveyor keys show`",
    )


def open_envelope(
    envelope: Mapping[str, Any],
    trusted: Mapping[str, Ed25519PublicKey],
    *,
    payload_type: str = PAYLOAD_TYPE,
) -> tuple[bytes, str]:
    """The payload and the trusted key whose signature over it is valid; ValueError if none."""
    if envelope.get("payloadType") != payload_type:
        raise ValueError(f"payload type {envelope.get('payloadType')!r}, not {payload_type}")
    payload = base64.b64decode(envelope["payload"], validate=True)
    message = pae(payload_type, payload)
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


def subject_service(stmt: Mapping[str, Any]) -> str | None:
    """The service a statement is about: its first subject is named ``SERVICE.tar.gz``."""
    subjects = stmt.get("subject")
    if not isinstance(subjects, list) or not subjects or not isinstance(subjects[0], Mapping):
        return None
    name = subjects[0].get("name")
    if not isinstance(name, str) or not name.endswith(".tar.gz"):
        return None
    return name.removesuffix(".tar.gz")


def _keyid_for(path: Path, service: str) -> str | None:
    """The key that signed ``service``'s statement in an envelope file; None if it has none.

    Read without verifying: this only decides whether to sign again, never whether to trust.
    """
    if not path.is_file():
        return None
    for line in path.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError, KeyError, IndexError, TypeError, AttributeError):
            envelope = json.loads(line)
            stmt = json.loads(base64.b64decode(envelope["payload"]))
            if subject_service(stmt) == service:
                return str(envelope["signatures"][0]["keyid"])
    return None


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


def public_pem(public: Ed25519PublicKey) -> str:
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def _public_from_pem(pem: str) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(pem.encode())
    if not isinstance(key, Ed25519PublicKey):
        raise Refused("a pinned key is not an ed25519 public key", hint="unpin it")
    return key


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
