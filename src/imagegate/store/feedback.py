"""Feedback on calls and objects: reactions, notes and scores, as Weave's feedback API.

Queries use Weave's Mongo-like `$expr` over feedback's own columns (`id`, `weave_ref`,
`feedback_type`, `creator`, `wb_user_id`, `created_at`, ...) and `payload.<key>` paths.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from imagegate.ids import uuid7
from imagegate.store.query import QueryError
from imagegate.store.tables import feedback

COLUMNS = (
    "id", "project_id", "weave_ref", "feedback_type", "payload", "creator", "annotation_ref",
    "runnable_ref", "call_ref", "trigger_ref", "queue_id", "wb_user_id", "created_at",
)  # fmt: skip
TEXT_FIELDS = frozenset(COLUMNS) - {"payload", "created_at"}
COMPARE = {"$eq": "__eq__", "$gt": "__gt__", "$gte": "__ge__", "$lt": "__lt__", "$lte": "__le__"}
MAX_DEPTH = 16


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
        stmt = sa.select(feedback).where(_where(project_id, query))
        for item in sort_by or []:
            column = feedback.c.get(item["field"])
            if column is None or item["field"] not in COLUMNS:
                raise QueryError(f"cannot sort feedback by {item['field']!r}")
            stmt = stmt.order_by(column.desc() if item.get("direction") == "desc" else column)
        stmt = stmt.order_by(feedback.c.created_at, feedback.c.id).limit(limit)
        stmt = stmt.offset(offset or None)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
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
        if not isinstance(query, Mapping) or set(query) != {"$expr"}:
            raise QueryError('query must be an object with exactly one key, "$expr"')
        terms.append(_expr(query["$expr"], 1))
    return sa.and_(*terms)


def _expr(node: Any, depth: int) -> sa.ColumnElement[bool]:
    if depth > MAX_DEPTH:
        raise QueryError(f"query nested deeper than {MAX_DEPTH} levels")
    if not isinstance(node, Mapping) or len(node) != 1:
        raise QueryError(f"expected an operator object like {{'$eq': [...]}}, got {node!r}")
    op, arg = next(iter(node.items()))
    if op in ("$and", "$or") and isinstance(arg, list):
        terms = [_expr(term, depth + 1) for term in arg]
        if op == "$and":
            return sa.and_(sa.true(), *terms)
        return sa.or_(sa.false(), *terms)
    if op == "$not" and isinstance(arg, list) and len(arg) == 1:
        return sa.not_(sa.func.coalesce(_expr(arg[0], depth + 1), sa.false()))
    if op in COMPARE and isinstance(arg, list) and len(arg) == 2:
        field, value = _field_and_literal(arg)
        return getattr(field, COMPARE[op])(_coerce(field, value))
    if op == "$in" and isinstance(arg, list) and len(arg) == 2 and isinstance(arg[1], list):
        field = _field(arg[0])
        values = [_literal(v) for v in arg[1]]
        return field.in_([_coerce(field, v) for v in values])
    if op == "$contains" and isinstance(arg, Mapping) and {"input", "substr"} <= set(arg):
        text, substr = _field(arg["input"]), _literal(arg["substr"])
        if arg.get("case_insensitive"):
            return sa.func.lower(text).contains(str(substr).lower(), autoescape=True)
        return text.contains(str(substr), autoescape=True)
    raise QueryError(f"unsupported feedback query operator {op!r}")


def _field_and_literal(pair: list[Any]) -> tuple[sa.ColumnElement[Any], Any]:
    left, right = pair
    if isinstance(left, Mapping) and "$literal" in left:
        left, right = right, left
    return _field(left), _literal(right)


def _field(node: Any) -> sa.ColumnElement[Any]:
    path = node.get("$getField") if isinstance(node, Mapping) else None
    if not isinstance(path, str):
        raise QueryError(f"expected a $getField, got {node!r}")
    if path in TEXT_FIELDS or path == "created_at":
        return feedback.c[path]
    name, _, key = path.partition(".")
    if name == "payload" and key and "." not in key:
        return feedback.c.payload[key].as_string()
    raise QueryError(f"unknown feedback field {path!r}")


def _literal(node: Any) -> Any:
    if not isinstance(node, Mapping) or "$literal" not in node:
        raise QueryError(f"expected a $literal, got {node!r}")
    value = node["$literal"]
    if not isinstance(value, str | int | float | bool):
        raise QueryError(f"unsupported literal {value!r}")
    return value


def _coerce(field: sa.ColumnElement[Any], value: Any) -> Any:
    if field is feedback.c.created_at:
        try:
            parsed = datetime.fromisoformat(str(value))
        except ValueError as exc:
            raise QueryError(f"invalid timestamp {value!r}") from exc
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return str(value)
