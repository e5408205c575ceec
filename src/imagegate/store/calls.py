"""Traced calls in SQL (SQLite or PostgreSQL), read back in Weave's CallSchema shape."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from imagegate.store.db import transaction
from imagegate.store.query import calls_before, calls_order_by, calls_where
from imagegate.store.spend import call_counts
from imagegate.store.statements import execute_off_loop
from imagegate.store.tables import calls
from imagegate.weave_shape import trace_name

# Columns every returned call carries even when the caller asks for fewer: the Weave
# client's Call model requires them.
REQUIRED_COLUMNS = ("id", "project_id", "op_name", "trace_id", "started_at")
PAGE_ROWS = 500  # rows per page of a stream; one page is held in memory at a time
# A long stream's first page is smaller: its first call goes out after 50 rows are read.
FIRST_PAGE_ROWS = 50


def _keyset_fields(sort_by: Sequence[Mapping[str, Any]] | None) -> list[tuple[str, str]] | None:
    """The (column, direction) list of an order that pages by key (columns that are never
    NULL, ending with the unique id), else None: such streams page by offset."""
    fields = [(s["field"], s.get("direction", "asc")) for s in sort_by or []]
    if not fields:
        fields = [("started_at", "asc")]
    if all(f != "id" for f, _ in fields):
        fields.append(("id", "asc"))
    if not all(f in ("started_at", "id") for f, _ in fields):
        return None
    return fields[: [f for f, _ in fields].index("id") + 1]


def _after(fields: list[tuple[str, str]], row: Any) -> sa.ColumnElement[bool]:
    """Rows that come after `row` in the order `fields` gives. The first column's bound
    stands alone too, so an index on it gives the range."""
    terms = []
    for i, (name, direction) in enumerate(fields):
        column = calls.c[name]
        beyond = column > row._mapping[name] if direction == "asc" else column < row._mapping[name]
        ties = [calls.c[n] == row._mapping[n] for n, _ in fields[:i]]
        terms.append(sa.and_(*ties, beyond))
    name, direction = fields[0]
    first = calls.c[name]
    bound = first >= row._mapping[name] if direction == "asc" else first <= row._mapping[name]
    return sa.and_(bound, sa.or_(*terms))


# A call's start and end, as statements the group-commit writer (store/group_commit.py)
# runs for many calls at once; CallStore runs them for one.
START = calls.insert()
FINISH = (
    calls.update()
    .where(calls.c.id == sa.bindparam("f_id"))
    .values(
        ended_at=sa.bindparam("f_ended_at", type_=calls.c.ended_at.type),
        output=sa.bindparam("f_output", type_=calls.c.output.type),
        summary=sa.bindparam("f_summary", type_=calls.c.summary.type),
        exception=sa.bindparam("f_exception", type_=calls.c.exception.type),
    )
)


def finish_params(
    call_id: str,
    ended_at: datetime,
    output: Any,
    summary: Mapping[str, Any],
    exception: str | None,
) -> dict[str, Any]:
    """FINISH's parameters for one call."""
    return {
        "f_id": call_id,
        "f_ended_at": ended_at,
        "f_output": output,
        "f_summary": dict(summary),
        "f_exception": exception,
    }


def _wire(row: Any, keep: set[str] | None, include_costs: bool) -> dict[str, Any]:
    call = to_wire(row._mapping, include_costs=include_costs)
    return {k: v for k, v in call.items() if k in keep} if keep else call


class CallStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def start(self, call: Mapping[str, Any], *, conn: AsyncConnection | None = None) -> None:
        """Record a call as started (it reads back as `running` until `finish`), in
        `conn`'s transaction when given."""
        async with transaction(self.engine, conn) as conn:
            await conn.execute(START, [dict(call)])

    async def finish(
        self,
        call_id: str,
        *,
        ended_at: datetime,
        output: Any,
        summary: Mapping[str, Any],
        exception: str | None,
        conn: AsyncConnection | None = None,
    ) -> None:
        async with transaction(self.engine, conn) as conn:
            await conn.execute(
                FINISH, [finish_params(call_id, ended_at, output, summary, exception)]
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
        stmt = sa.select(calls).where(where)
        keep = set(columns) | set(REQUIRED_COLUMNS) if columns else None
        return self._iterate(stmt, sort_by, limit, offset or 0, keep, include_costs)

    async def _iterate(
        self,
        stmt: sa.Select[Any],
        sort_by: Sequence[Mapping[str, Any]] | None,
        limit: int | None,
        offset: int,
        keep: set[str] | None,
        include_costs: bool,
    ) -> AsyncIterator[dict[str, Any]]:
        # Page by page, each page fetched whole on a connection held only for that: a
        # client that reads slowly (or stops reading) holds no database connection.
        # Pages follow the order's key where it allows (started_at, id); otherwise the
        # ordered ids are taken in one query and the rows fetched by id, page by page.
        # Compiled off the event loop, cached for this stream's pages only: query shapes
        # are the caller's, and unbounded, so they never enter the engine-wide cache.
        compiled_cache: dict[Any, Any] = {}
        order = calls_order_by(sort_by)
        keyset = _keyset_fields(sort_by)
        if keyset is None:
            async with self.engine.connect() as conn:
                ids = stmt.with_only_columns(calls.c.id).order_by(*order)
                ids = ids.limit(limit).offset(offset or None)
                ordered = list((await execute_off_loop(conn, ids, compiled_cache)).scalars())
            for start in range(0, len(ordered), PAGE_ROWS):
                chunk = ordered[start : start + PAGE_ROWS]
                async with self.engine.connect() as conn:
                    await conn.execution_options(compiled_cache=compiled_cache)
                    rows = await conn.execute(sa.select(calls).where(calls.c.id.in_(chunk)))
                    by_id = {row.id: row for row in rows}
                for call_id in chunk:
                    if (row := by_id.get(call_id)) is not None:  # else deleted meanwhile
                        yield _wire(row, keep, include_costs)
            return
        last: Any = None
        if offset:
            # The row just before the first one wanted, by its key alone: the skipped rows
            # are then read from the index only (on PostgreSQL an index-only scan, where
            # fetching whole rows to skip them cost ~0.4 ms per 1,000), not from the table.
            anchor = stmt.with_only_columns(*(calls.c[name] for name, _ in keyset))
            anchor = anchor.order_by(*order).offset(offset - 1).limit(1)
            async with self.engine.connect() as conn:
                last = (await execute_off_loop(conn, anchor, compiled_cache)).first()
            if last is None:
                return
        sent = 0
        while limit is None or sent < limit:
            small_first = sent == 0 and (limit is None or limit > PAGE_ROWS)
            rows_wanted = FIRST_PAGE_ROWS if small_first else PAGE_ROWS
            size = rows_wanted if limit is None else min(rows_wanted, limit - sent)
            page = stmt.order_by(*order).limit(size)
            # After the last row sent: no rescan of the pages before (as OFFSET would).
            if last is not None:
                page = page.where(_after(keyset, last))
            async with self.engine.connect() as conn:
                rows = (await execute_off_loop(conn, page, compiled_cache)).all()
            for row in rows:
                yield _wire(row, keep, include_costs)
            sent += len(rows)
            if len(rows) < size:
                return
            last = rows[-1]

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
        # Translated in a worker thread, off the event loop (see api/calls.py).
        where = await asyncio.to_thread(calls_where, project_id, filter, query)
        matching = sa.select(calls.c.id).where(where)
        if limit is not None:
            matching = matching.limit(limit + 1)
        counted = sa.select(sa.func.count()).select_from(matching.subquery())
        async with self.engine.connect() as conn:
            if query is None and not any((filter or {}).values()):
                total = (await call_counts(conn, [project_id])).get(project_id, (0, 0))[0]
            else:
                total = int((await execute_off_loop(conn, counted)).scalar() or 0)
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
        "trace_name": trace_name(row["op_name"], row["display_name"]),
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
        "thread_id": row["thread_id"],
        "turn_id": row["turn_id"],
        "started_at": started.isoformat(),
        "ended_at": None if ended is None else ended.isoformat(),
        "attributes": row["attributes"] or {},
        "inputs": row["inputs"] or {},
        "output": row["output"],
        "exception": row["exception"],
        "summary": summary,
        "wb_user_id": row["wb_user_id"],
        "wb_run_id": row["wb_run_id"],
        "deleted_at": None if row["deleted_at"] is None else row["deleted_at"].isoformat(),
        "storage_size_bytes": None,
        "total_storage_size_bytes": None,
    }
