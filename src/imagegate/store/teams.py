"""Users, teams (entities) and memberships with roles, as the admin API manages them,
and the audit log of every such change."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from imagegate.ids import uuid7
from imagegate.store.tables import audit_log, entities, memberships, users


@dataclass(frozen=True)
class UserInfo:
    id: str
    name: str
    is_admin: bool
    created_at: datetime
    teams: dict[str, str]  # entity -> role


@dataclass(frozen=True)
class Member:
    user: str
    role: str
    since: datetime


@dataclass(frozen=True)
class AuditEntry:
    id: str
    at: datetime
    actor: str
    action: str
    target: str
    details: dict[str, Any]


def _now() -> datetime:
    return datetime.now(UTC)


class TeamStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def users(self) -> list[UserInfo]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(sa.select(users).order_by(users.c.name))).all()
            teams: dict[str, dict[str, str]] = {}
            for user_id, entity, role in await conn.execute(
                sa.select(memberships.c.user_id, entities.c.name, memberships.c.role).join(
                    entities, entities.c.id == memberships.c.entity_id
                )
            ):
                teams.setdefault(user_id, {})[entity] = role
        return [
            UserInfo(r.id, r.name, bool(r.is_admin), r.created_at, teams.get(r.id, {}))
            for r in rows
        ]

    async def user_id(self, name: str) -> str | None:
        async with self.engine.connect() as conn:
            found = await conn.scalar(sa.select(users.c.id).where(users.c.name == name))
        return None if found is None else str(found)

    async def entity_id(self, name: str) -> str | None:
        async with self.engine.connect() as conn:
            found = await conn.scalar(sa.select(entities.c.id).where(entities.c.name == name))
        return None if found is None else str(found)

    async def create_user(self, name: str, *, is_admin: bool = False) -> bool:
        """False when the name is taken."""
        try:
            async with self.engine.begin() as conn:
                await conn.execute(
                    users.insert().values(
                        id=uuid7(), name=name, is_admin=is_admin, created_at=_now()
                    )
                )
        except IntegrityError:
            return False
        return True

    async def teams(self, only: frozenset[str] | None = None) -> list[tuple[str, int]]:
        """(team, number of members), of `only` these teams when given."""
        query = (
            sa.select(entities.c.name, sa.func.count(memberships.c.user_id))
            .outerjoin(memberships, memberships.c.entity_id == entities.c.id)
            .group_by(entities.c.name)
            .order_by(entities.c.name)
        )
        if only is not None:
            query = query.where(entities.c.name.in_(sorted(only)))
        async with self.engine.connect() as conn:
            return [(name, int(count)) for name, count in await conn.execute(query)]

    async def create_team(self, name: str) -> bool:
        """False when the name is taken."""
        try:
            async with self.engine.begin() as conn:
                await conn.execute(
                    entities.insert().values(id=uuid7(), name=name, created_at=_now())
                )
        except IntegrityError:
            return False
        return True

    async def members(self, entity: str) -> list[Member]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                sa.select(users.c.name, memberships.c.role, memberships.c.created_at)
                .join(memberships, memberships.c.user_id == users.c.id)
                .join(entities, entities.c.id == memberships.c.entity_id)
                .where(entities.c.name == entity)
                .order_by(users.c.name)
            )
            return [Member(name, role, since) for name, role, since in rows]

    async def set_member(self, entity_id: str, user_id: str, role: str) -> None:
        """Add the user to the team with `role`, or change their role."""
        async with self.engine.begin() as conn:
            updated = await conn.execute(
                memberships.update()
                .where(memberships.c.entity_id == entity_id, memberships.c.user_id == user_id)
                .values(role=role)
            )
            if not updated.rowcount:
                await conn.execute(
                    memberships.insert().values(
                        entity_id=entity_id, user_id=user_id, role=role, created_at=_now()
                    )
                )

    async def remove_member(self, entity_id: str, user_id: str) -> bool:
        async with self.engine.begin() as conn:
            result = await conn.execute(
                memberships.delete().where(
                    memberships.c.entity_id == entity_id, memberships.c.user_id == user_id
                )
            )
        return bool(result.rowcount)

    async def audit(
        self, actor: str, action: str, target: str, details: dict[str, Any] | None = None
    ) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                audit_log.insert().values(
                    id=uuid7(),
                    at=_now(),
                    actor=actor,
                    action=action,
                    target=target,
                    details=details or {},
                )
            )

    async def audit_entries(self, limit: int = 100, before: str | None = None) -> list[AuditEntry]:
        """Newest first; `before` (an entry id) pages back."""
        query = sa.select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)
        if before:
            query = query.where(audit_log.c.id < before)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [AuditEntry(r.id, r.at, r.actor, r.action, r.target, dict(r.details)) for r in rows]
