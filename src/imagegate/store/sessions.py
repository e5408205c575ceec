"""Browser sessions, kept on the server so that signing out (or revoking the key) ends
them for every copy of the cookie."""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from imagegate.store.tables import web_sessions


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


class SessionStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def create(self, key_hash: str, max_age: int) -> str:
        """A new session for the key with `key_hash`; the token for the cookie."""
        token = secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        async with self.engine.begin() as conn:
            await conn.execute(web_sessions.delete().where(web_sessions.c.expires_at <= now))
            await conn.execute(
                web_sessions.insert().values(
                    id_hash=_hash(token),
                    key_hash=key_hash,
                    created_at=now,
                    expires_at=now + timedelta(seconds=max_age),
                )
            )
        return token

    async def key_hash(self, token: str) -> str | None:
        """The key hash of a live session, else None."""
        if not token or len(token) > 128:
            return None
        async with self.engine.connect() as conn:
            found = await conn.scalar(
                sa.select(web_sessions.c.key_hash).where(
                    web_sessions.c.id_hash == _hash(token),
                    web_sessions.c.expires_at > datetime.now(UTC),
                )
            )
        return None if found is None else str(found)

    async def end(self, token: str) -> None:
        if token:
            async with self.engine.begin() as conn:
                await conn.execute(
                    web_sessions.delete().where(web_sessions.c.id_hash == _hash(token))
                )
