"""Reading calls back: /call/read, /calls/stream_query, /calls/query_stats."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from imagegate.api.deps import App, Caller, authorize
from imagegate.errors import BadRequest
from imagegate.limits import Slot
from imagegate.schemas import (
    CallReadReq,
    CallReadRes,
    CallsQueryReq,
    CallsQueryStatsReq,
    CallsQueryStatsRes,
)
from imagegate.store.query_terms import QueryError

router = APIRouter(tags=["Calls"])


@router.post("/call/read", response_model=CallReadRes)
async def call_read(req: CallReadReq, app: App, caller: Caller) -> dict[str, Any]:
    authorize(caller, req.project_id)
    async with app.reads.slot(caller.user_id):
        call = await app.calls.read(req.project_id, req.id, include_costs=bool(req.include_costs))
        if call is not None and req.include_feedback:
            await app.traces.with_feedback(req.project_id, [call])
    return {"call": call}


@router.post(
    "/calls/stream_query",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/jsonl": {}}, "description": "One call per line"}},
)
async def calls_stream_query(req: CallsQueryReq, app: App, caller: Caller) -> StreamingResponse:
    authorize(caller, req.project_id)
    # Held until the stream ends: one key's slow readers queue behind each other only.
    slot = await app.reads.acquire(caller.user_id)
    try:
        # Translating the query runs in a worker thread: even a query at the size cap
        # then costs the event loop nothing.
        calls = await asyncio.to_thread(
            app.calls.stream,
            req.project_id,
            filter=req.filter.model_dump(exclude_none=True) if req.filter else None,
            query=req.query,
            sort_by=[s.model_dump() for s in req.sort_by] if req.sort_by else None,
            limit=req.limit,
            offset=req.offset,
            columns=req.columns,
            include_costs=bool(req.include_costs),
        )
        expand = req.expand_columns if req.return_expanded_column_values is not False else None
        calls = app.traces.enrich(
            caller,
            req.project_id,
            calls,
            include_feedback=bool(req.include_feedback),
            expand_columns=expand or [],
        )
        # The query runs here, before the answer starts: a database that refuses it gets
        # a status code (see error_answers.py), not a 200 stream cut short.
        first = await anext(calls, None)
    except QueryError as exc:
        slot.release()
        raise BadRequest(str(exc)) from exc
    except BaseException:
        slot.release()
        raise
    return StreamingResponse(
        _json_lines(first, calls, slot),
        media_type="application/jsonl",
        background=BackgroundTask(slot.release),  # also when the client went away
    )


async def _json_lines(
    first: dict[str, Any] | None, calls: AsyncIterator[dict[str, Any]], slot: Slot
) -> AsyncIterator[bytes]:
    try:
        if first is None:
            return
        yield (json.dumps(first, separators=(",", ":")) + "\n").encode()
        async for call in calls:
            yield (json.dumps(call, separators=(",", ":")) + "\n").encode()
    finally:
        slot.release()


@router.post("/calls/query_stats", response_model=CallsQueryStatsRes)
async def calls_query_stats(req: CallsQueryStatsReq, app: App, caller: Caller) -> dict[str, Any]:
    authorize(caller, req.project_id)
    try:
        async with app.reads.slot(caller.user_id):
            count, has_more = await app.calls.count(
                req.project_id,
                filter=req.filter.model_dump(exclude_none=True) if req.filter else None,
                query=req.query,
                limit=req.limit,
            )
    except QueryError as exc:
        raise BadRequest(str(exc)) from exc
    return {"count": count, "has_more": has_more}
