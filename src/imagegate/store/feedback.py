"""Feedback on calls and objects: reactions, notes and scores, as Weave's feedback API.

Queries are the calls query language (`store/query.py`) over feedback's own columns
(`id`, `weave_ref`, `feedback_type`, `creator`, `wb_user_id`, `created_at`, ...) and
`payload.<key>` paths.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from imagegate.ids import uuid7
from imagegate.store.query_schema import Schema
from imagegate.store.statements import execute_off_loop
from imagegate.store.tables import feedback

COLUMNS = (
    "id", "project_id", "weave_ref", "feedback_type", "payload", "creator", "annotation_ref",
    "runnable_ref", "call_ref", "trigger_ref", "queue_id", "wb_user_id", "created_at",
)  # fmt: skip
# Queries name feedback's own columns, and paths into its payload (`payload.note`).
FEEDBACK = Schema(
    feedback,
    {name: "string" for name in COLUMNS if name not in ("payload", "created_at")}
    | {"created_at": "timestamp"},
    frozenset({"payload"}),
)


def call_ref(project_id: str, call_id: str) -> str:
    """The weave_ref that feedback on a call carries."""
    return f"weave:///{project_id}/call/{call_id}"


class FeedbackStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def create(
        self, items: Sequence[Mapping[str, Any]], *, wb_user_id: str
    ) -> list[dict[str, Any]]:
        """Store feedback (one statement for the batch); each as the client gets it back."""
        now = datetime.now(UTC)
        rows = [_row(item, wb_user_id, now) for item in items]
        if rows:
            async with self.engine.begin() as conn:
                await conn.execute(feedback.insert(), rows)
        return [_created(row) for row in rows]

    async def replace(
        self, project_id: str, feedback_id: str, item: Mapping[str, Any], *, wb_user_id: str
    ) -> dict[str, Any] | None:
        """Swap one piece of feedback for a new one (a new id); None if it was not found."""
        row = _row(item, wb_user_id, datetime.now(UTC))
        async with self.engine.begin() as conn:
            gone = await conn.execute(
                feedback.delete().where(
                    feedback.c.project_id == project_id, feedback.c.id == feedback_id
                )
            )
            if not gone.rowcount:
                return None
            await conn.execute(feedback.insert(), [row])
        return _created(row)

    async def query(
        self,
        project_id: str,
        *,
        query: Mapping[str, Any] | None = None,
        sort_by: Sequence[Mapping[str, str]] | None = None,
        limit: int | None = None,
        offset: int | None = None,
        fields: Sequence[str] | None = None,
    ) -> list[dict[str, Any]]:
        def build() -> sa.Select[Any]:
            return (
                sa.select(feedback)
                .where(_where(project_id, query))
                .order_by(*FEEDBACK.order_by(sort_by, default="created_at", unique="id"))
                .limit(limit)
                .offset(offset or None)
            )

        # The query's shape is the caller's: translated and compiled off the event loop,
        # and not cached engine-wide (store/statements.py).
        stmt = await asyncio.to_thread(build)
        async with self.engine.connect() as conn:
            rows = (await execute_off_loop(conn, stmt)).all()
        result = [to_wire(r._mapping) for r in rows]
        if fields:
            result = [{k: v for k, v in r.items() if k in fields} for r in result]
        return result

    async def for_refs(self, project_id: str, refs: Sequence[str]) -> dict[str, list[dict]]:
        """Feedback per weave_ref, oldest first (for `include_feedback` on call reads)."""
        found: dict[str, list[dict[str, Any]]] = {ref: [] for ref in refs}
        if not refs:
            return found
        stmt = (
            sa.select(feedback)
            .where(feedback.c.project_id == project_id, feedback.c.weave_ref.in_(list(refs)))
            .order_by(feedback.c.created_at, feedback.c.id)
        )
        async with self.engine.connect() as conn:
            for row in await conn.execute(stmt):
                found[row.weave_ref].append(to_wire(row._mapping))
        return found

    async def purge_refs(self, project_id: str, refs: Sequence[str]) -> None:
        """Remove all feedback on these refs (of deleted calls)."""
        async with self.engine.begin() as conn:
            for start in range(0, len(refs), 1000):
                await conn.execute(
                    feedback.delete().where(
                        feedback.c.project_id == project_id,
                        feedback.c.weave_ref.in_(list(refs[start : start + 1000])),
                    )
                )

    async def purge(self, project_id: str, query: Mapping[str, Any]) -> int:
        async with self.engine.begin() as conn:
            result = await conn.execute(feedback.delete().where(_where(project_id, query)))
        return int(result.rowcount or 0)


def _row(item: Mapping[str, Any], wb_user_id: str, now: datetime) -> dict[str, Any]:
    known = set(COLUMNS) | {"feedback_id"}
    return {
        "id": item.get("id") or uuid7(),
        "project_id": item["project_id"],
        "weave_ref": item["weave_ref"],
        "feedback_type": item["feedback_type"],
        "payload": dict(item.get("payload") or {}),
        "creator": item.get("creator"),
        "annotation_ref": item.get("annotation_ref"),
        "runnable_ref": item.get("runnable_ref"),
        "call_ref": item.get("call_ref"),
        "trigger_ref": item.get("trigger_ref"),
        "queue_id": item.get("queue_id"),
        "extra": {k: v for k, v in item.items() if k not in known},
        "wb_user_id": wb_user_id,  # always the caller's own
        "created_at": now,
    }


def _created(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "created_at": row["created_at"].isoformat(),
        "payload": row["payload"],
        "wb_user_id": row["wb_user_id"],
    }


def to_wire(row: Mapping[str, Any]) -> dict[str, Any]:
    wire = {name: row[name] for name in COLUMNS}
    wire["created_at"] = row["created_at"].isoformat()
    return {**(row["extra"] or {}), **wire}


def _where(project_id: str, query: Mapping[str, Any] | None) -> sa.ColumnElement[bool]:
    terms = [feedback.c.project_id == project_id]
    if query is not None:
        terms.append(FEEDBACK.expression(query))
    return sa.and_(*terms)
