"""Users, entities (teams), memberships, projects and API keys."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from imagegate.errors import Forbidden
from imagegate.ids import uuid7
from imagegate.store.tables import api_keys, entities, memberships, projects, users

KEY_PREFIX = "ig_"

Role = Literal["owner", "member", "viewer"]
ROLES: tuple[Role, ...] = ("owner", "member", "viewer")


def key_prefix(key: str) -> str:
    """What `keys list` and the keys page show of a key: enough to tell keys apart."""
    return key[: len(KEY_PREFIX) + 6]


def hash_key(key: str) -> str:
    # Keys carry 256 random bits, so a fast hash is safe here: there is nothing to
    # brute-force, and a slow KDF would cost every request.
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    """The authenticated caller: who, in which teams with which role, with which key."""

    user_id: str
    user_name: str
    entities: frozenset[str]
    # The project of the key used, for requests that name none (None: the key has none).
    default_project: str | None = None
    roles: Mapping[str, str] = field(default_factory=dict)  # entity -> role
    is_admin: bool = False
    key_id: str | None = None

    def can_generate(self, entity: str) -> bool:
        """Owners and members generate (and spend); viewers only read."""
        return self.roles.get(entity) in ("owner", "member")

    def can_manage(self, entity: str) -> bool:
        """Team owners manage their team's members and budgets; admins manage all."""
        return self.is_admin or self.roles.get(entity) == "owner"


def authorize(principal: Principal, project_id: str, *, generate: bool = False) -> None:
    """Members of a project's entity may use it; everyone else gets the same 403,
    whether or not the project exists, so existence never leaks. With `generate`, the
    caller must also be allowed to write and spend: owners and members, not viewers."""
    entity = project_id.split("/", 1)[0]
    if entity not in principal.entities:
        raise Forbidden(f"you do not have access to project {project_id!r}")
    if generate and not principal.can_generate(entity):
        raise Forbidden(f"you are a viewer in team {entity!r}: viewers can read but not generate")


@dataclass(frozen=True)
class KeyInfo:
    id: str
    user: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None
    entities: tuple[str, ...] = ()  # the user's teams, which the key acts in
    default_project: str | None = None


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
                    sa.select(
                        users.c.id,
                        users.c.name,
                        users.c.is_admin,
                        api_keys.c.key_hash,
                        api_keys.c.id.label("key_id"),
                        api_keys.c.default_project,
                    )
                    .join(api_keys, api_keys.c.user_id == users.c.id)
                    .where(api_keys.c.key_hash == digest, api_keys.c.revoked_at.is_(None))
                )
            ).first()
            # The lookup is by hash; comparing again in constant time keeps timing from
            # telling anything about stored hashes even if an index lookup leaks.
            if row is None or not hmac.compare_digest(row.key_hash, digest):
                return None
            roles = {
                name: role
                for name, role in await conn.execute(
                    sa.select(entities.c.name, memberships.c.role)
                    .join(memberships, memberships.c.entity_id == entities.c.id)
                    .where(memberships.c.user_id == row.id)
                )
            }
            return Principal(
                row.id,
                row.name,
                frozenset(roles),
                roles=roles,
                is_admin=bool(row.is_admin),
                key_id=row.key_id,
                default_project=row.default_project,
            )

    async def user_count(self) -> int:
        async with self.engine.connect() as conn:
            return int(await conn.scalar(sa.select(sa.func.count()).select_from(users)) or 0)

    async def create_key(
        self,
        user: str,
        entity: str | None = None,
        *,
        role: Role | None = None,
        is_admin: bool = False,
        default_project: str | None = None,
    ) -> str:
        """Create the user, entity and membership if missing; return a new plaintext key.

        A new membership gets `role`, by default owner of one's own entity or of an
        entity made here, else member; an existing membership keeps its role.
        `default_project` ("entity/project", in the key's entity) is where requests with
        this key go when they name no project (the OpenAI door).
        """
        entity = entity or user
        if default_project is not None and default_project.split("/", 1)[0] != entity:
            raise ValueError(
                f"the default project {default_project!r} must be in the key's entity {entity!r}"
            )
        async with self.engine.begin() as conn:
            user_id = await _ensure(conn, users, user)
            if is_admin:
                await conn.execute(
                    users.update().where(users.c.id == user_id).values(is_admin=True)
                )
            entity_existed = bool(
                await conn.scalar(sa.select(entities.c.id).where(entities.c.name == entity))
            )
            entity_id = await _ensure(conn, entities, entity)
            if not await conn.scalar(
                sa.select(memberships.c.user_id).where(
                    memberships.c.user_id == user_id, memberships.c.entity_id == entity_id
                )
            ):
                default: Role = "owner" if entity == user or not entity_existed else "member"
                await conn.execute(
                    memberships.insert().values(
                        user_id=user_id,
                        entity_id=entity_id,
                        created_at=_now(),
                        role=role or default,
                    )
                )
            key, _key_id = await insert_key(conn, user_id, default_project)
        return key

    async def new_key_for(self, user_id: str) -> tuple[str, str]:
        """A new key for an existing user: (the key, its id)."""
        async with self.engine.begin() as conn:
            return await insert_key(conn, user_id)

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
            teams: dict[str, list[str]] = {}
            for user_name, entity_name in await conn.execute(
                sa.select(users.c.name, entities.c.name)
                .join(memberships, memberships.c.user_id == users.c.id)
                .join(entities, entities.c.id == memberships.c.entity_id)
                .order_by(entities.c.name)
            ):
                teams.setdefault(user_name, []).append(entity_name)
        return [
            KeyInfo(
                r.id,
                r.user_name,
                r.prefix,
                r.created_at,
                r.revoked_at,
                tuple(teams.get(r.user_name, ())),
                r.default_project,
            )
            for r in rows
        ]

    async def revoke_key(self, key_id_or_key: str, *, user_id: str | None = None) -> bool:
        """Revoke by key id or by the key itself (only `user_id`'s keys when given);
        False when no active key matched."""
        match = sa.or_(
            api_keys.c.id == key_id_or_key, api_keys.c.key_hash == hash_key(key_id_or_key)
        )
        query = api_keys.update().where(match, api_keys.c.revoked_at.is_(None))
        if user_id is not None:
            query = query.where(api_keys.c.user_id == user_id)
        async with self.engine.begin() as conn:
            result = await conn.execute(query.values(revoked_at=_now()))
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


async def insert_key(
    conn: AsyncConnection, user_id: str, default_project: str | None = None
) -> tuple[str, str]:
    """Store a new key for `user_id` (its hash only); (the plaintext key, its id)."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    key_id = uuid7()
    await conn.execute(
        api_keys.insert().values(
            id=key_id,
            user_id=user_id,
            key_hash=hash_key(key),
            prefix=key_prefix(key),
            created_at=_now(),
            default_project=default_project,
        )
    )
    return key, key_id


async def _ensure(conn: AsyncConnection, table: sa.Table, name: str) -> str:
    """The id of the row named `name` in users or entities, inserting it if missing."""
    existing = await conn.scalar(sa.select(table.c.id).where(table.c.name == name))
    if existing:
        return str(existing)
    new_id = uuid7()
    await conn.execute(table.insert().values(id=new_id, name=name, created_at=_now()))
    return new_id
