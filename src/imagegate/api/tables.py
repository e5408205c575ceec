"""Weave tables: /table/create, /table/update, /table/query, /table/query_stats."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from imagegate.api.deps import App, Caller, authorize
from imagegate.wire import (
    TableCreateReq,
    TableCreateRes,
    TableQueryReq,
    TableQueryStatsReq,
    TableUpdateReq,
    TableUpdateRes,
)

router = APIRouter(tags=["Tables"])


@router.post("/table/create", response_model=TableCreateRes)
async def table_create(req: TableCreateReq, app: App, caller: Caller) -> dict[str, Any]:
    table = req.table
    authorize(caller, table.project_id, generate=True)
    await app.accounts.ensure_project(table.project_id)
    digest, row_digests = await app.traces.tables.create(
        table.project_id, table.rows, table.expected_digest
    )
    return {"digest": digest, "row_digests": row_digests}


@router.post("/table/update", response_model=TableUpdateRes)
async def table_update(req: TableUpdateReq, app: App, caller: Caller) -> dict[str, Any]:
    authorize(caller, req.project_id, generate=True)
    updates = [u.model_dump(exclude_none=True) for u in req.updates]
    digest, added = await app.traces.tables.update(req.project_id, req.base_digest, updates)
    return {"digest": digest, "updated_row_digests": added}


@router.post("/table/query")
async def table_query(req: TableQueryReq, app: App, caller: Caller) -> dict[str, Any]:
    authorize(caller, req.project_id)
    rows = await app.traces.tables.rows(
        req.project_id,
        req.digest,
        row_digests=req.filter.row_digests if req.filter else None,
        sort_by=[s.model_dump() for s in req.sort_by or []],
        limit=req.limit,
        offset=req.offset,
    )
    return {"rows": rows}


@router.post("/table/query_stats")
async def table_query_stats(req: TableQueryStatsReq, app: App, caller: Caller) -> dict[str, Any]:
    authorize(caller, req.project_id)
    return {"count": await app.traces.tables.count(req.project_id, req.digest)}
