"""Weave tables (dataset rows): rows content-addressed and shared, a table being the
ordered list of its row digests. Digests are Weave's, so refs match the client's."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from imagegate.errors import BadRequest, DigestMismatch, NotFound
from imagegate.store.objects import json_digest
from imagegate.store.tables import table_rows, weave_tables


def table_digest(row_digests: Sequence[str]) -> str:
    """Weave's table digest: SHA-256 (hex) over the row digests in order."""
    hasher = hashlib.sha256()
    for digest in row_digests:
        hasher.update(digest.encode())
    return hasher.hexdigest()


class TableStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def create(
        self, project_id: str, rows: Sequence[Any], expected_digest: str | None = None
    ) -> tuple[str, list[str]]:
        row_digests = [json_digest(row) for row in rows]
        digest = table_digest(row_digests)
        if expected_digest is not None and expected_digest != digest:
            raise DigestMismatch(digest, expected_digest)
        async with self.engine.begin() as conn:
            await _store(conn, project_id, digest, list(zip(row_digests, rows, strict=True)))
        return digest, row_digests

    async def update(
        self, project_id: str, base_digest: str, updates: Sequence[Mapping[str, Any]]
    ) -> tuple[str, list[str]]:
        """Apply append/pop/insert edits to a stored table: a new table; its digest and
        the digests of the rows added."""
        async with self.engine.begin() as conn:
            digests = await _row_digests(conn, project_id, base_digest)
            new_rows: list[tuple[str, Any]] = []
            for update in updates:
                op, spec = next(iter(update.items()))
                if op == "pop":
                    _check_index(spec["index"], len(digests), "pop")
                    digests.pop(spec["index"])
                    continue
                row_digest = json_digest(spec["row"])
                new_rows.append((row_digest, spec["row"]))
                if op == "append":
                    digests.append(row_digest)
                else:
                    _check_index(spec["index"], len(digests) + 1, "insert")
                    digests.insert(spec["index"], row_digest)
            digest = table_digest(digests)
            await _store(conn, project_id, digest, new_rows, digests)
        return digest, [d for d, _ in new_rows]

    async def rows(
        self,
        project_id: str,
        digest: str,
        *,
        row_digests: Sequence[str] | None = None,
        sort_by: Sequence[Mapping[str, str]] | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> list[dict[str, Any]]:
        """The table's rows in table order (or sorted by dotted fields of the row)."""
        async with self.engine.connect() as conn:
            order = await _row_digests(conn, project_id, digest)
            wanted = set(row_digests) if row_digests else None
            unique = sorted({d for d in order if wanted is None or d in wanted})
            values: dict[str, Any] = {}
            for start in range(0, len(unique), 1000):
                result = await conn.execute(
                    sa.select(table_rows.c.digest, table_rows.c.val).where(
                        table_rows.c.project_id == project_id,
                        table_rows.c.digest.in_(unique[start : start + 1000]),
                    )
                )
                values.update({r.digest: r.val for r in result})
        rows = [
            {"digest": d, "val": values.get(d), "original_index": i}
            for i, d in enumerate(order)
            if wanted is None or d in wanted
        ]
        for item in reversed(sort_by or []):
            rows.sort(
                key=lambda r, f=item["field"]: _sort_key(r["val"], f),
                reverse=item.get("direction") == "desc",
            )
        end = None if limit is None else (offset or 0) + limit
        return rows[offset or 0 : end]

    async def count(self, project_id: str, digest: str) -> int:
        async with self.engine.connect() as conn:
            return len(await _row_digests(conn, project_id, digest))

    async def row(self, project_id: str, row_digest: str) -> Any:
        async with self.engine.connect() as conn:
            return await conn.scalar(
                sa.select(table_rows.c.val).where(
                    table_rows.c.project_id == project_id, table_rows.c.digest == row_digest
                )
            )


def _check_index(index: int, size: int, op: str) -> None:
    if not 0 <= index < size:
        raise BadRequest(f"{op} index {index} is out of range for a table of {size} rows")


def _sort_key(val: Any, field: str) -> tuple[int, str]:
    for part in field.split("."):
        val = val.get(part) if isinstance(val, dict) else None
    # None last; numbers and text compared as text would misorder 10 < 9, so pad numbers.
    if val is None:
        return (1, "")
    if isinstance(val, int | float) and not isinstance(val, bool):
        return (0, f"{val:040.10f}")
    return (0, str(val))


async def _row_digests(conn: AsyncConnection, project_id: str, digest: str) -> list[str]:
    found = await conn.scalar(
        sa.select(weave_tables.c.row_digests).where(
            weave_tables.c.project_id == project_id, weave_tables.c.digest == digest
        )
    )
    if found is None:
        raise NotFound(f"no table {digest} in project {project_id!r}")
    return list(found)


async def _store(
    conn: AsyncConnection,
    project_id: str,
    digest: str,
    rows: Sequence[tuple[str, Any]],
    order: Sequence[str] | None = None,
) -> None:
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    if rows:
        unique = {d: val for d, val in rows}
        await conn.execute(
            insert(table_rows).on_conflict_do_nothing(),
            [{"project_id": project_id, "digest": d, "val": v} for d, v in unique.items()],
        )
    await conn.execute(
        insert(weave_tables).on_conflict_do_nothing(),
        {
            "project_id": project_id,
            "digest": digest,
            "row_digests": list(order if order is not None else [d for d, _ in rows]),
            "created_at": datetime.now(UTC),
        },
    )
