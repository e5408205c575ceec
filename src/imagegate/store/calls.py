"""Traced calls in SQL (SQLite or PostgreSQL), read back in Weave's CallSchema shape."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from imagegate.store.query import calls_before, calls_order_by, calls_where
from imagegate.store.spend import call_counts
from imagegate.store.tables import calls

# Columns every returned call carries even when the caller asks for fewer: the Weave
# client's Call model requires them.
REQUIRED_COLUMNS = ("id", "project_id", "op_name", "trace_id", "started_at")


class CallStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def start(self, call: Mapping[str, Any]) -> None:
        """Record a call as started (it reads back as `running` until `finish`)."""
        async with self.engine.begin() as conn:
            await conn.execute(calls.insert().values(**call))

    async def finish(
        self,
        call_id: str,
        *,
        ended_at: datetime,
        output: Any,
        summary: Mapping[str, Any],
        exception: str | None,
    ) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                calls.update()
                .where(calls.c.id == call_id)
                .values(
                    ended_at=ended_at, output=output, summary=dict(summary), exception=exception
                )
            )

    async def fail_unfinished(
        self,
        started_before: datetime | None,
        *,
        ended_at: datetime,
        exception: str,
        summary: Mapping[str, Any],
    ) -> int:
        """End every call still unfinished (started before `started_before`, when given)
        as failed with `exception`; how many were. A `finish` that comes later wins."""
        stmt = calls.update().where(calls.c.ended_at.is_(None))
        if started_before is not None:
            stmt = stmt.where(calls.c.started_at < started_before)
        async with self.engine.begin() as conn:
            result = await conn.execute(
                stmt.values(ended_at=ended_at, exception=exception, summary=dict(summary))
            )
        return int(result.rowcount or 0)

    async def read(
        self, project_id: str, call_id: str, *, include_costs: bool = False
    ) -> dict[str, Any] | None:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(calls).where(
                        calls.c.project_id == project_id,
                        calls.c.id == call_id,
                        calls.c.deleted_at.is_(None),
                    )
                )
            ).first()
        return None if row is None else to_wire(row._mapping, include_costs=include_costs)

    def stream(
        self,
        project_id: str,
        *,
        filter: Mapping[str, Any] | None = None,
        query: Mapping[str, Any] | None = None,
        sort_by: Sequence[Mapping[str, Any]] | None = None,
        limit: int | None = None,
        offset: int | None = None,
        columns: Sequence[str] | None = None,
        include_costs: bool = False,
        before: tuple[datetime, str] | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Matching calls, one at a time: a full-project stream never sits in memory.

        The query is built (and a bad one refused with QueryError) before this returns,
        so an HTTP stream never starts for a query that cannot run. `before` is a keyset
        cursor, the (started_at, id) of the last call of the previous page; it reads
        newest first whatever `sort_by` says.
        """
        where = calls_where(project_id, filter, query)
        if before is not None:
            where = sa.and_(where, calls_before(*before))
            sort_by = [{"field": "started_at", "direction": "desc"}]
        stmt = (
            sa.select(calls)
            .where(where)
            .order_by(*calls_order_by(sort_by))
            .limit(limit)
            .offset(offset or None)
        )
        keep = set(columns) | set(REQUIRED_COLUMNS) if columns else None
        return self._iterate(stmt, keep, include_costs)

    async def _iterate(
        self, stmt: sa.Select[Any], keep: set[str] | None, include_costs: bool
    ) -> AsyncIterator[dict[str, Any]]:
        async with self.engine.connect() as conn:
            result = await conn.stream(stmt.execution_options(yield_per=500))
            async for row in result:
                call = to_wire(row._mapping, include_costs=include_costs)
                yield {k: v for k, v in call.items() if k in keep} if keep else call

    async def count(
        self,
        project_id: str,
        *,
        filter: Mapping[str, Any] | None = None,
        query: Mapping[str, Any] | None = None,
        limit: int | None = None,
    ) -> tuple[int, bool]:
        """How many calls match, capped at `limit`, and whether more exist past it.

        The whole project's count comes from the hourly rollups (store/spend.py), a sum
        over about one row per hour instead of a walk over every call.
        """
        matching = sa.select(calls.c.id).where(calls_where(project_id, filter, query))
        if limit is not None:
            matching = matching.limit(limit + 1)
        async with self.engine.connect() as conn:
            if query is None and not any((filter or {}).values()):
                total = (await call_counts(conn, [project_id])).get(project_id, (0, 0))[0]
            else:
                stmt = sa.select(sa.func.count()).select_from(matching.subquery())
                total = int(await conn.scalar(stmt) or 0)
        if limit is not None and total > limit:
            return limit, True
        return total, False


def status_of(exception: str | None, ended_at: datetime | None) -> str:
    if exception is not None:
        return "error"
    return "running" if ended_at is None else "success"


def to_wire(row: Mapping[str, Any], *, include_costs: bool = False) -> dict[str, Any]:
    """A stored row as Weave's CallSchema; `summary.weave` is derived here, never stored."""
    started, ended = row["started_at"], row["ended_at"]
    summary = dict(row["summary"] or {})
    costs = summary.pop("costs", None)
    weave: dict[str, Any] = {
        "status": status_of(row["exception"], ended),
        "latency_ms": None if ended is None else round((ended - started).total_seconds() * 1000),
    }
    if include_costs and costs is not None:
        weave["costs"] = costs
    summary["weave"] = weave
    return {
        "id": row["id"],
        "project_id": row["project_id"],
        "op_name": row["op_name"],
        "display_name": row["display_name"],
        "trace_id": row["trace_id"],
        "parent_id": row["parent_id"],
        "thread_id": None,
        "turn_id": None,
        "started_at": started.isoformat(),
        "ended_at": None if ended is None else ended.isoformat(),
        "attributes": row["attributes"] or {},
        "inputs": row["inputs"] or {},
        "output": row["output"],
        "exception": row["exception"],
        "summary": summary,
        "wb_user_id": row["wb_user_id"],
        "wb_run_id": None,
        "deleted_at": None if row["deleted_at"] is None else row["deleted_at"].isoformat(),
        "storage_size_bytes": None,
        "total_storage_size_bytes": None,
    }
