"""Read queries for the web gallery that the calls query language does not cover:
projects with their counts, activity and spend, and user names."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from imagegate.store.spend import call_counts, spend_by_model
from imagegate.store.tables import calls, entities, memberships, projects, users


@dataclass(frozen=True)
class ProjectSummary:
    id: str  # "entity/project"
    entity: str
    name: str
    created_at: datetime
    calls: int
    errors: int
    last_activity: datetime | None
    spend: float  # USD; calls without recorded costs count as free


class GalleryStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def projects(self, entity_names: Iterable[str]) -> list[ProjectSummary]:
        """The projects of these entities, most recently active first."""
        names = sorted(set(entity_names))
        if not names:
            return []
        # The newest call of each project, read from ix_calls_live_started; counts and
        # spend come from the hourly rollups, not from a walk over every call.
        last = (
            sa.select(sa.func.max(calls.c.started_at))
            .where(calls.c.project_id == projects.c.id, calls.c.deleted_at.is_(None))
            .scalar_subquery()
        )
        stmt = (
            sa.select(
                projects.c.id,
                projects.c.name,
                entities.c.name.label("entity"),
                projects.c.created_at,
                last.label("last_activity"),
            )
            .join(entities, entities.c.id == projects.c.entity_id)
            .where(entities.c.name.in_(names))
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
            ids = [r.id for r in rows]
            counts = await call_counts(conn, ids)
            spend = await self._spend(conn, ids)
        summaries = [
            ProjectSummary(
                id=r.id,
                entity=r.entity,
                name=r.name,
                created_at=r.created_at,
                calls=counts.get(r.id, (0, 0))[0],
                errors=counts.get(r.id, (0, 0))[1],
                last_activity=r.last_activity,
                spend=spend.get(r.id, 0.0),
            )
            for r in rows
        ]
        summaries.sort(key=lambda p: p.id)
        summaries.sort(key=lambda p: p.last_activity or p.created_at, reverse=True)
        return summaries

    async def _spend(self, conn: AsyncConnection, ids: list[str]) -> dict[str, float]:
        by_project = await spend_by_model(conn, ids)
        return {
            project_id: sum(m["total_cost"] for m in models.values())
            for project_id, models in by_project.items()
        }

    async def members(self, entity: str) -> list[tuple[str, str]]:
        """(user id, user name) of the entity's members, by name."""
        stmt = (
            sa.select(users.c.id, users.c.name)
            .join(memberships, memberships.c.user_id == users.c.id)
            .join(entities, entities.c.id == memberships.c.entity_id)
            .where(entities.c.name == entity)
            .order_by(users.c.name)
        )
        async with self.engine.connect() as conn:
            return [(r.id, r.name) for r in (await conn.execute(stmt)).all()]

    async def user_names(self, ids: Iterable[str | None]) -> dict[str, str]:
        wanted = sorted({i for i in ids if i})
        if not wanted:
            return {}
        async with self.engine.connect() as conn:
            stmt = sa.select(users.c.id, users.c.name).where(users.c.id.in_(wanted))
            rows = (await conn.execute(stmt)).all()
        return {r.id: r.name for r in rows}

    async def user_id(self, name: str) -> str | None:
        async with self.engine.connect() as conn:
            found = await conn.scalar(sa.select(users.c.id).where(users.c.name == name))
        return str(found) if found else None
