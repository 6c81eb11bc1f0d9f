"""API tokens: stored by the hash of their secret, created and revoked on the ledger."""

from __future__ import annotations

import sqlalchemy as sa

from conveyor.errors import NotFound
from conveyor.store import rows
from conveyor.store.base import StoreBase
from conveyor.store.records import NewEvent, TokenRecord
from conveyor.store.tables import tokens


class TokensRepo(StoreBase):
    """Create, look up, list and revoke tokens, and note when one was last used."""

    def create_token(self, token: TokenRecord, secret_hash: str, *, actor: str) -> TokenRecord:
        """Store a new token (by the hash of its secret) and say so on the ledger."""
        with self._writing() as w:
            w.conn.execute(
                sa.insert(tokens).values(
                    id=token.id,
                    secret_hash=secret_hash,
                    identity=token.identity,
                    role=token.role,
                    environments=list(token.environments),
                    created_at=w.now,
                    created_by=actor,
                    expires_at=token.expires_at,
                )
            )
            details = {
                "token": token.id,
                "identity": token.identity,
                "role": token.role,
                "environments": list(token.environments),
                "expires_at": token.expires_at,
            }
            w.append([NewEvent("token.created", details)], actor=actor)
            return _token(w.conn, token.id)

    def token_by_hash(self, secret_hash: str) -> TokenRecord | None:
        with self._reading() as conn:
            row = conn.execute(
                sa.select(tokens).where(tokens.c.secret_hash == secret_hash)
            ).one_or_none()
        return None if row is None else rows.token(row)

    def tokens(self) -> list[TokenRecord]:
        with self._reading() as conn:
            query = sa.select(tokens).order_by(tokens.c.created_at, tokens.c.id)
            return [rows.token(row) for row in conn.execute(query)]

    def revoke_token(self, token_id: str, *, actor: str) -> TokenRecord:
        with self._writing() as w:
            row = w.conn.execute(sa.select(tokens).where(tokens.c.id == token_id)).one_or_none()
            if row is None:
                raise NotFound(
                    f"no token {token_id!r}", hint="list them with `conveyor tokens list`"
                )
            if row.revoked_at is None:
                w.conn.execute(
                    sa.update(tokens).where(tokens.c.id == token_id).values(revoked_at=w.now)
                )
                w.append(
                    [NewEvent("token.revoked", {"token": token_id, "identity": row.identity})],
                    actor=actor,
                )
            return _token(w.conn, token_id)

    def token_used(self, token_id: str, at: float) -> None:
        """Remember when a token was last used (not a ledger event: reads are not changes)."""
        with self._writing_unlogged() as conn:
            conn.execute(sa.update(tokens).where(tokens.c.id == token_id).values(last_used_at=at))


def _token(conn: sa.Connection, token_id: str) -> TokenRecord:
    return rows.token(conn.execute(sa.select(tokens).where(tokens.c.id == token_id)).one())
