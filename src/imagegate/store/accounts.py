"""Users, entities (teams), memberships, projects and API keys."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from imagegate.errors import Forbidden
from imagegate.ids import uuid7
from imagegate.store.tables import api_keys, entities, memberships, projects, users

KEY_PREFIX = "ig_"


def hash_key(key: str) -> str:
    # Keys carry 256 random bits, so a fast hash is safe here: there is nothing to
    # brute-force, and a slow KDF would cost every request.
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    """The authenticated caller."""

    user_id: str
    user_name: str
    entities: frozenset[str]


def authorize(principal: Principal, project_id: str) -> None:
    """Members of a project's entity may use it; everyone else gets the same 403,
    whether or not the project exists, so existence never leaks."""
    entity = project_id.split("/", 1)[0]
    if entity not in principal.entities:
        raise Forbidden(f"you do not have access to project {project_id!r}")


@dataclass(frozen=True)
class KeyInfo:
    id: str
    user: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None


def _now() -> datetime:
    return datetime.now(UTC)


class AccountStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def authenticate(self, key: str) -> Principal | None:
        return await self.authenticate_hash(hash_key(key))

    async def authenticate_hash(self, digest: str) -> Principal | None:
        """The owner of the active key with this hash (web sessions keep only the hash,
        so revoking the key ends them too)."""
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(users.c.id, users.c.name, api_keys.c.key_hash)
                    .join(api_keys, api_keys.c.user_id == users.c.id)
                    .where(api_keys.c.key_hash == digest, api_keys.c.revoked_at.is_(None))
                )
            ).first()
            # The lookup is by hash; comparing again in constant time keeps timing from
            # telling anything about stored hashes even if an index lookup leaks.
            if row is None or not hmac.compare_digest(row.key_hash, digest):
                return None
            names = await conn.scalars(
                sa.select(entities.c.name)
                .join(memberships, memberships.c.entity_id == entities.c.id)
                .where(memberships.c.user_id == row.id)
            )
            return Principal(row.id, row.name, frozenset(names))

    async def user_count(self) -> int:
        async with self.engine.connect() as conn:
            return int(await conn.scalar(sa.select(sa.func.count()).select_from(users)) or 0)

    async def create_key(self, user: str, entity: str | None = None) -> str:
        """Create the user, entity and membership if missing; return a new plaintext key."""
        entity = entity or user
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        async with self.engine.begin() as conn:
            user_id = await _ensure(conn, users, user)
            entity_id = await _ensure(conn, entities, entity)
            if not await conn.scalar(
                sa.select(memberships.c.user_id).where(
                    memberships.c.user_id == user_id, memberships.c.entity_id == entity_id
                )
            ):
                await conn.execute(
                    memberships.insert().values(
                        user_id=user_id, entity_id=entity_id, created_at=_now()
                    )
                )
            await conn.execute(
                api_keys.insert().values(
                    id=uuid7(),
                    user_id=user_id,
                    key_hash=hash_key(key),
                    prefix=key[: len(KEY_PREFIX) + 6],
                    created_at=_now(),
                )
            )
        return key

    async def list_keys(self, user: str | None = None) -> list[KeyInfo]:
        query = (
            sa.select(api_keys, users.c.name.label("user_name"))
            .join(users, users.c.id == api_keys.c.user_id)
            .order_by(users.c.name, api_keys.c.created_at)
        )
        if user:
            query = query.where(users.c.name == user)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [KeyInfo(r.id, r.user_name, r.prefix, r.created_at, r.revoked_at) for r in rows]

    async def revoke_key(self, key_id_or_key: str) -> bool:
        """Revoke by key id or by the key itself; False when no active key matched."""
        match = sa.or_(
            api_keys.c.id == key_id_or_key, api_keys.c.key_hash == hash_key(key_id_or_key)
        )
        async with self.engine.begin() as conn:
            result = await conn.execute(
                api_keys.update()
                .where(match, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=_now())
            )
        return bool(result.rowcount)

    async def project_exists(self, project_id: str) -> bool:
        async with self.engine.connect() as conn:
            found = await conn.scalar(sa.select(projects.c.id).where(projects.c.id == project_id))
        return found is not None

    async def ensure_project(self, project_id: str) -> None:
        """Create `entity/project` if missing. The caller has checked membership."""
        entity_name, name = project_id.split("/", 1)
        async with self.engine.connect() as conn:
            if await conn.scalar(sa.select(projects.c.id).where(projects.c.id == project_id)):
                return
        try:
            async with self.engine.begin() as conn:
                entity_id = await conn.scalar(
                    sa.select(entities.c.id).where(entities.c.name == entity_name)
                )
                await conn.execute(
                    projects.insert().values(
                        id=project_id, entity_id=entity_id, name=name, created_at=_now()
                    )
                )
        except IntegrityError:
            pass  # created concurrently by another request: that is the goal


async def _ensure(conn: AsyncConnection, table: sa.Table, name: str) -> str:
    """The id of the row named `name` in users or entities, inserting it if missing."""
    existing = await conn.scalar(sa.select(table.c.id).where(table.c.name == name))
    if existing:
        return str(existing)
    new_id = uuid7()
    await conn.execute(table.insert().values(id=new_id, name=name, created_at=_now()))
    return new_id
