"""Provider keys per entity, encrypted at rest (Fernet, keyed from the server secret)."""

from __future__ import annotations

import base64
import hashlib
import re
from datetime import UTC, datetime

import sqlalchemy as sa
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
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


def _fernet(secret: bytes) -> Fernet:
    derived = hashlib.sha256(b"imagegate provider secrets\0" + secret).digest()
    return Fernet(base64.urlsafe_b64encode(derived))


class SecretUnreadable(RuntimeError):
    """A stored secret that this server's key cannot decrypt (the key changed)."""


class SecretStore:
    def __init__(self, engine: AsyncEngine, keys: list[bytes]) -> None:
        """`keys` is the key ring: the first encrypts, each decrypts (so a new key can
        be put first while values stored under the old one still read; `reencrypt`
        then moves every value to the new key and the old one can go)."""
        self.engine = engine
        self._fernet = MultiFernet([_fernet(key) for key in keys])

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
                "IMAGEGATE_SECRET_KEY differs from the one it was stored with, and no key "
                "of IMAGEGATE_ENCRYPTION_KEYS is it"
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

    async def reencrypt(self) -> int:
        """Encrypt every stored value with the ring's first key; how many there were."""
        async with self.engine.begin() as conn:
            rows = (
                await conn.execute(sa.select(provider_secrets.c.entity_id, provider_secrets.c.name,
                                             provider_secrets.c.ciphertext))
            ).all()  # fmt: skip
            for row in rows:
                try:
                    rotated = self._fernet.rotate(row.ciphertext.encode()).decode()
                except InvalidToken as exc:
                    raise RuntimeError(
                        f"secret {row.name} cannot be decrypted with any key in the ring"
                    ) from exc
                await conn.execute(
                    provider_secrets.update()
                    .where(
                        provider_secrets.c.entity_id == row.entity_id,
                        provider_secrets.c.name == row.name,
                    )
                    .values(ciphertext=rotated)
                )
        return len(rows)
