"""Weave's calls query language (`filter`, `query`, `sort_by`) as SQLAlchemy Core.

`query` is Mongo-like: `{"$expr": {"$gt": [{"$getField": "inputs.n"}, {"$literal": 2}]}}`.
It compiles to portable SQL for SQLite and PostgreSQL; the few constructs that must differ
go through `PerDialect` (_query_dialect.py), which carries both spellings and renders the
right one. The language itself compiles in query_schema.py; this module is the calls table's.

Typing: a JSON path has no type of its own, so it is read as whatever the other side of
its comparison is (a literal's Python type, or a `$convert`). A JSON value of another type
reads as NULL, so it simply fails to match instead of erroring mid-query on PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from imagegate.store._query_dialect import PerDialect
from imagegate.store.query_schema import Schema
from imagegate.store.query_terms import Kind, QueryError, capped
from imagegate.store.tables import MODEL_MAX, Timestamp, calls

# Fields with a type of their own; JSON paths take their type from the comparison.
FIELD_KINDS: dict[str, Kind] = {
    "id": "string", "project_id": "string", "op_name": "string", "display_name": "string",
    "trace_id": "string", "parent_id": "string", "exception": "string", "wb_user_id": "string",
    "thread_id": "string", "turn_id": "string", "wb_run_id": "string",
    "started_at": "timestamp", "ended_at": "timestamp",
    "summary.weave.status": "string", "summary.weave.latency_ms": "number",  # derived
}  # fmt: skip
JSON_COLUMNS = frozenset(("inputs", "output", "attributes", "summary"))
FILTER_COLUMNS = {
    "op_names": "op_name", "call_ids": "id", "trace_ids": "trace_id",
    "parent_ids": "parent_id", "wb_user_ids": "wb_user_id", "thread_ids": "thread_id",
    "turn_ids": "turn_id", "wb_run_ids": "wb_run_id",
}  # fmt: skip
REF_FILTERS = {"input_refs": "inputs", "output_refs": "output"}  # calls naming any of these
# Calls' columns that are never NULL: sorting them needs no NULLS LAST, which PostgreSQL
# would otherwise not match to an index's scan order (it ignores NOT NULL when matching).
CALLS_NOT_NULL = frozenset(
    ("id", "project_id", "op_name", "trace_id", "started_at", "summary.weave.status")
)


def calls_where(
    project_id: str, filter: Mapping[str, Any] | None, query: Mapping[str, Any] | None
) -> sa.ColumnElement[bool]:
    """The WHERE clause for a calls query: always scoped to one project's live calls."""
    terms = [calls.c.project_id == project_id, calls.c.deleted_at.is_(None)]
    filter = filter or {}
    for key, column in FILTER_COLUMNS.items():
        if values := filter.get(key):  # Weave treats None and [] alike: no filter
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                raise QueryError(f"filter.{key} must be a list of strings")
            terms.append(calls.c[column].in_(capped(values, f"filter.{key}")))
    for key, column in REF_FILTERS.items():
        if refs := filter.get(key):
            if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
                raise QueryError(f"filter.{key} must be a list of strings")
            # A ref is a whole JSON string in the stored value: its quoted form, matched
            # literally in the JSON text, finds exactly that string.
            text = sa.cast(calls.c[column], sa.Text)
            quoted = [json.dumps(r) for r in capped(refs, key)]
            terms.append(sa.or_(*(text.contains(q, autoescape=True) for q in quoted)))
    if filter.get("trace_roots_only") not in (None, True, False):
        raise QueryError("filter.trace_roots_only must be a boolean")
    if filter.get("trace_roots_only"):
        terms.append(calls.c.parent_id.is_(None))
    if query is not None:
        terms.append(CALLS.expression(query))
    return sa.and_(*terms)


def calls_order_by(sort_by: Sequence[Mapping[str, Any]] | None) -> list[sa.ColumnElement[Any]]:
    """ORDER BY terms; `id` always ends the list so limit/offset paging is stable.

    Newest first is then `started_at DESC, id`: exactly the order of the indexes on
    (..., started_at DESC, id) that migration 0009 adds.
    """
    return CALLS.order_by(sort_by, default="started_at", unique="id")


def calls_before(started_at: datetime, call_id: str) -> sa.ColumnElement[bool]:
    """Keyset paging for newest-first reads (`started_at DESC, id`): the calls after the
    one at (started_at, id). Both backends seek ix_calls_live_started to the cursor by
    `started_at <=`, so page 10,000 costs what page 1 does (OFFSET walks every skipped
    row); the `id` term only sorts out calls started in the same instant.
    """
    at = sa.literal(started_at, Timestamp)
    return sa.and_(
        calls.c.started_at <= at,
        sa.or_(calls.c.started_at < at, calls.c.id > sa.literal(call_id, sa.String())),
    )


def _status() -> sa.ColumnElement[str]:
    return calls.c.status  # generated by the database from exception and ended_at


def _latency_ms() -> sa.ColumnElement[float]:
    # Whole ms, like the wire form; NULL while running. SQLite holds naive UTC text.
    started, ended = calls.c.started_at, calls.c.ended_at
    return PerDialect(
        sa.func.round((sa.func.julianday(ended) - sa.func.julianday(started)) * 86_400_000.0),
        sa.cast(sa.func.round(sa.extract("epoch", ended - started) * 1000), sa.Float),
        type_=sa.Float(),
    )


_DERIVED = {"summary.weave.status": _status, "summary.weave.latency_ms": _latency_ms}


CALLS = Schema(
    calls,
    FIELD_KINDS,
    JSON_COLUMNS,
    _DERIVED,
    not_null=CALLS_NOT_NULL,
    copies={"inputs.model": ("model", MODEL_MAX)},
)
field_expr = CALLS.field_expr
