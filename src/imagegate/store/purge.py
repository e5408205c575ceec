"""Removing files nothing references any more.

Files are content-addressed per project, so one image can belong to several calls,
objects or table rows. A file is removed only when no live call, object or table row of
its project names its digest. The check and the removal run in one transaction holding
a per-project lock (an advisory lock on PostgreSQL), so two replicas purging at once
cannot both decide on stale information. A digest is 43 letters and digits, so a text
search for it in the stored JSON can only match that digest.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from imagegate.digest import is_digest
from imagegate.store.db import advisory_lock
from imagegate.store.files import FileStore
from imagegate.store.tables import calls, objects, table_rows


def file_digests(value: Any) -> set[str]:
    """The digests of the files a stored value references (Weave's `files` mappings of
    Content and other custom types), however deeply nested."""
    found: set[str] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            files = item.get("files")
            if isinstance(files, dict):
                found.update(d for d in files.values() if isinstance(d, str) and is_digest(d))
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


async def purge_unreferenced(
    engine: AsyncEngine, files: FileStore, project_id: str, digests: Iterable[str]
) -> list[str]:
    """Remove those of `digests` nothing in the project references; the removed ones."""
    removed: list[str] = []
    candidates = sorted(set(digests))
    if not candidates:
        return removed
    async with engine.begin() as conn:
        await advisory_lock(conn, f"imagegate:purge:{project_id}")
        for digest in candidates:
            if not await _referenced(conn, project_id, digest):
                await files.delete(project_id, digest)
                removed.append(digest)
    return removed


async def _referenced(conn: AsyncConnection, project_id: str, digest: str) -> bool:
    pattern = f"%{digest}%"

    def mentions(column: sa.ColumnElement[Any]) -> sa.ColumnElement[bool]:
        return sa.cast(column, sa.Text).like(pattern)

    checks = (
        sa.select(calls.c.id).where(
            calls.c.project_id == project_id,
            calls.c.deleted_at.is_(None),
            sa.or_(mentions(calls.c.output), mentions(calls.c.inputs)),
        ),
        sa.select(objects.c.digest).where(
            objects.c.project_id == project_id,
            objects.c.deleted_at.is_(None),
            mentions(objects.c.val),
        ),
        sa.select(table_rows.c.digest).where(
            table_rows.c.project_id == project_id, mentions(table_rows.c.val)
        ),
    )
    for check in checks:
        if await conn.scalar(check.limit(1)) is not None:
            return True
    return False
