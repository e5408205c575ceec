"""Calls written by trace clients (Weave's `@weave.op`): starts, ends, whole calls,
display names and deletes. A batch of new calls goes to the database as one statement
(SQLite: one per ~1,900 calls, its bound-value limit), not one per call."""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from pydantic_core import to_json
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from imagegate.store.tables import calls
from imagegate.store.write_queue import writer_turn

MAX_TREE_DEPTH = 1000  # a deleted call takes its descendants; cycles cannot loop forever


def _insert_new(conn: AsyncConnection) -> Any:
    """INSERT that skips ids already stored: a client's retried batch is a no-op."""
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    return insert(calls).on_conflict_do_nothing(index_elements=[calls.c.id])


def _column_values(
    conn: AsyncConnection, names: Sequence[str], rows: Sequence[Mapping[str, Any]]
) -> list[list[Any]]:
    """Each column's values as the driver takes them, through the column's own bind
    processing (UTC timestamps), as any insert's would go; JSON columns are encoded by
    pydantic-core (the same JSON as the columns' `json.dumps`, in half the time)."""
    dialect = conn.dialect
    columns = []
    for name in names:
        values = [row[name] for row in rows]
        if isinstance(calls.c[name].type, sa.JSON):
            columns.append([_json_text(v) for v in values])
            continue
        process = calls.c[name].type.dialect_impl(dialect).bind_processor(dialect)
        columns.append([process(v) for v in values] if process else values)
    return columns


def _json_text(value: Any) -> str:
    # None is JSON null, as the JSON type stores it (none_as_null is off); NaN and
    # infinities are written as json.dumps writes them.
    return to_json(value, inf_nan_mode="constants").decode()


def _same_keys(rows: Sequence[Mapping[str, Any]]) -> list[str] | None:
    names = list(rows[0])
    return None if any(list(row) != names for row in rows) else names


async def _insert_new_pg(conn: AsyncConnection, rows: Sequence[Mapping[str, Any]]) -> None:
    """PostgreSQL: the batch as one INSERT ... SELECT FROM unnest(one array per column).

    The rows reach the server as a single statement, instead of one executed statement
    per row (asyncpg's executemany), which cost the server about a third more CPU per
    call.
    """
    names = _same_keys(rows)
    if names is None:  # rows of differing keys: the general way
        await conn.execute(_insert_new(conn), [dict(r) for r in rows])
        return
    arrays = _column_values(conn, names, rows)
    types = ", ".join(
        f"${i}::{_pg_type(calls.c[n], conn.dialect)}[]" for i, n in enumerate(names, 1)
    )
    sql = (
        f"INSERT INTO calls ({', '.join(names)}) SELECT * FROM unnest({types}) "
        "ON CONFLICT (id) DO NOTHING"
    )
    await conn.exec_driver_sql(sql, tuple(arrays))


# Bound values in one SQLite statement: its limit since 3.32 (older ones allow 999).
SQLITE_MAX_VARIABLES = 32766 if sqlite3.sqlite_version_info >= (3, 32) else 999


async def _insert_new_sqlite(conn: AsyncConnection, rows: Sequence[Mapping[str, Any]]) -> None:
    """SQLite: the batch as few multi-row INSERT statements as its bound-value limit
    allows, not one statement per row (executemany).

    The triggers still run for every row, but the prompt index (FTS5) writes its
    pending terms to disk at each statement's end: one statement per row made it write
    and merge a segment per call, about 80 µs of CPU a row; one per batch, about 25
    (measured with sqlite3 alone, docs/scale.md).
    """
    names = _same_keys(rows)
    if names is None:
        await conn.execute(_insert_new(conn), [dict(r) for r in rows])
        return
    values = list(zip(*_column_values(conn, names, rows), strict=True))  # row by row
    per_statement = max(1, SQLITE_MAX_VARIABLES // len(names))
    row_marks = "(" + ", ".join("?" * len(names)) + ")"
    head = f"INSERT INTO calls ({', '.join(names)}) VALUES "
    for first in range(0, len(rows), per_statement):
        last = min(len(rows), first + per_statement)
        params = tuple(itertools.chain.from_iterable(values[first:last]))
        sql = head + ", ".join([row_marks] * (last - first)) + " ON CONFLICT (id) DO NOTHING"
        await conn.exec_driver_sql(sql, params)


def _pg_type(column: sa.Column[Any], dialect: Any) -> str:
    return str(column.type.dialect_impl(dialect).compile(dialect=dialect))


class CallWriter:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def insert(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Store calls (started or complete) in one statement; known ids are skipped."""
        if not rows:
            return
        async with writer_turn(self.engine), self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                await _insert_new_pg(conn, rows)
            else:
                await _insert_new_sqlite(conn, rows)

    async def end(self, ends: Sequence[Mapping[str, Any]]) -> None:
        """Finish started calls, each only within its own project."""
        if not ends:
            return
        stmt = (
            calls.update()
            .where(
                calls.c.id == sa.bindparam("b_id"),
                calls.c.project_id == sa.bindparam("b_project_id"),
            )
            .values(
                ended_at=sa.bindparam("b_ended_at"),
                output=sa.bindparam("b_output", type_=calls.c.output.type),
                summary=sa.bindparam("b_summary", type_=calls.c.summary.type),
                exception=sa.bindparam("b_exception"),
            )
        )
        params = [{f"b_{k}": v for k, v in end.items()} for end in ends]
        async with writer_turn(self.engine), self.engine.begin() as conn:
            await conn.execute(stmt, params)

    async def set_display_name(self, project_id: str, call_id: str, name: str | None) -> bool:
        async with self.engine.begin() as conn:
            result = await conn.execute(
                calls.update()
                .where(
                    calls.c.project_id == project_id,
                    calls.c.id == call_id,
                    calls.c.deleted_at.is_(None),
                )
                .values(display_name=name)
            )
        return bool(result.rowcount)

    async def delete(
        self, project_id: str, call_ids: Iterable[str], now: datetime
    ) -> list[dict[str, Any]]:
        """Mark these live calls and all their descendants deleted; the deleted calls'
        `id`, `op_name`, `inputs` and `output` (which name the files they referenced)."""
        async with self.engine.begin() as conn:
            ids = await _with_descendants(conn, project_id, set(call_ids))
            if not ids:
                return []
            where = sa.and_(
                calls.c.project_id == project_id,
                calls.c.id.in_(ids),
                calls.c.deleted_at.is_(None),
            )
            rows = (
                await conn.execute(
                    sa.select(calls.c.id, calls.c.op_name, calls.c.inputs, calls.c.output).where(
                        where
                    )
                )
            ).all()
            await conn.execute(calls.update().where(where).values(deleted_at=now))
        return [dict(r._mapping) for r in rows]


async def _with_descendants(conn: AsyncConnection, project_id: str, roots: set[str]) -> list[str]:
    live = sa.and_(calls.c.project_id == project_id, calls.c.deleted_at.is_(None))
    found = set(await conn.scalars(sa.select(calls.c.id).where(live, calls.c.id.in_(list(roots)))))
    frontier = set(found)
    for _ in range(MAX_TREE_DEPTH):
        if not frontier:
            break
        children = set(
            await conn.scalars(
                sa.select(calls.c.id).where(live, calls.c.parent_id.in_(list(frontier)))
            )
        )
        frontier = children - found
        found |= frontier
    return sorted(found)
