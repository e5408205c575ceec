"""Provider keys per entity, encrypted at rest (Fernet, keyed from the server secret)."""

from __future__ import annotations

import base64
import hashlib
import re
from datetime import UTC, datetime

import sqlalchemy as sa
from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from imagegate.store.tables import entities, provider_secrets

SECRET_NAME = re.compile(r"^[A-Z][A-Z0-9_]{0,127}$")


def check_secret_name(name: str) -> str:
    if not SECRET_NAME.match(name):
        raise ValueError(
            f"invalid secret name {name!r}: use an environment-variable style name "
            "such as OPENAI_API_KEY"
        )
    return name


class SecretUnreadable(RuntimeError):
    """A stored secret that this server's key cannot decrypt (the key changed)."""


class SecretStore:
    def __init__(self, engine: AsyncEngine, server_secret: bytes) -> None:
        self.engine = engine
        # A key of its own, derived from the server secret, so URL signatures and
        # encrypted keys never share key material.
        derived = hashlib.sha256(b"imagegate provider secrets\0" + server_secret).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(derived))

    async def _entity_id(self, conn: AsyncConnection, entity: str) -> str | None:
        return await conn.scalar(sa.select(entities.c.id).where(entities.c.name == entity))

    async def set(self, entity: str, name: str, value: str) -> None:
        check_secret_name(name)
        ciphertext = self._fernet.encrypt(value.encode()).decode()
        async with self.engine.begin() as conn:
            entity_id = await self._entity_id(conn, entity)
            if entity_id is None:
                raise LookupError(f"no entity named {entity!r}")
            where = (provider_secrets.c.entity_id == entity_id) & (provider_secrets.c.name == name)
            await conn.execute(provider_secrets.delete().where(where))
            await conn.execute(
                provider_secrets.insert().values(
                    entity_id=entity_id,
                    name=name,
                    ciphertext=ciphertext,
                    updated_at=datetime.now(UTC),
                )
            )

    async def get(self, entity: str, name: str) -> str | None:
        async with self.engine.connect() as conn:
            ciphertext = await conn.scalar(
                sa.select(provider_secrets.c.ciphertext)
                .join(entities, entities.c.id == provider_secrets.c.entity_id)
                .where(entities.c.name == entity, provider_secrets.c.name == name)
            )
        if ciphertext is None:
            return None
        try:
            return self._fernet.decrypt(ciphertext.encode()).decode()
        except InvalidToken as exc:
            raise SecretUnreadable(
                f"secret {name} of entity {entity!r} cannot be decrypted: "
                "IMAGEGATE_SECRET_KEY differs from the one it was stored with"
            ) from exc

    async def names(self, entity: str) -> list[tuple[str, datetime]]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                sa.select(provider_secrets.c.name, provider_secrets.c.updated_at)
                .join(entities, entities.c.id == provider_secrets.c.entity_id)
                .where(entities.c.name == entity)
                .order_by(provider_secrets.c.name)
            )
            return [(r.name, r.updated_at) for r in rows]

    async def delete(self, entity: str, name: str) -> bool:
        async with self.engine.begin() as conn:
            entity_id = await self._entity_id(conn, entity)
            result = await conn.execute(
                provider_secrets.delete().where(
                    provider_secrets.c.entity_id == entity_id, provider_secrets.c.name == name
                )
            )
        return bool(result.rowcount)
