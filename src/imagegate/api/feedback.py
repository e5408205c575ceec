"""Feedback: /feedback/create, /feedback/batch/create, /feedback/query, /feedback/replace,
/feedback/purge."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from imagegate.api.deps import App, Caller
from imagegate.errors import BadRequest, NotFound
from imagegate.store.query_terms import QueryError
from imagegate.wire import (
    FeedbackBatchCreateReq,
    FeedbackCreate,
    FeedbackPurgeReq,
    FeedbackQueryReq,
    FeedbackReplaceReq,
)

router = APIRouter(tags=["Feedback"])


@router.post("/feedback/create")
async def feedback_create(req: FeedbackCreate, app: App, caller: Caller) -> dict[str, Any]:
    [created] = await app.traces.add_feedback(caller, [req])
    return created


@router.post("/feedback/batch/create")
async def feedback_batch_create(
    req: FeedbackBatchCreateReq, app: App, caller: Caller
) -> dict[str, Any]:
    return {"res": await app.traces.add_feedback(caller, req.batch)}


@router.post("/feedback/replace")
async def feedback_replace(req: FeedbackReplaceReq, app: App, caller: Caller) -> dict[str, Any]:
    replaced = await app.traces.replace_feedback(caller, req)
    if replaced is None:
        raise NotFound(f"no feedback {req.feedback_id} in project {req.project_id!r}")
    return replaced


@router.post("/feedback/query")
async def feedback_query(req: FeedbackQueryReq, app: App, caller: Caller) -> dict[str, Any]:
    try:
        result = await app.traces.query_feedback(caller, req)
    except QueryError as exc:
        raise BadRequest(str(exc)) from exc
    return {"result": result, "total_count": len(result)}


@router.post("/feedback/purge")
async def feedback_purge(req: FeedbackPurgeReq, app: App, caller: Caller) -> dict[str, Any]:
    try:
        await app.traces.purge_feedback(caller, req.project_id, req.query)
    except QueryError as exc:
        raise BadRequest(str(exc)) from exc
    return {}
