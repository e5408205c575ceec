"""Calls written by trace clients: v2 calls/complete and call/start|end, the v1 start,
end and upsert_batch, display names (/call/update) and deletes (/calls/delete)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from imagegate.api.deps import App, Caller, project_from_path
from imagegate.api.json_body import FastJSONRoute
from imagegate.errors import NotFound
from imagegate.wire import (
    CallEndReq,
    CallsCompleteReq,
    CallsDeleteReq,
    CallsDeleteRes,
    CallStartReq,
    CallStartRes,
    CallUpdateReq,
    CallUpsertBatchReq,
    UpsertStart,
)

# Batches of whole calls are large JSON bodies: parsed by the faster parser.
router = APIRouter(tags=["Calls"], route_class=FastJSONRoute)


@router.post("/v2/{entity}/{project}/calls/complete")
async def calls_complete(
    entity: str, project: str, req: CallsCompleteReq, app: App, caller: Caller
) -> dict[str, Any]:
    await app.traces.complete(caller, req.batch, project_from_path(entity, project))
    return {}


@router.post("/v2/{entity}/{project}/call/start", response_model=CallStartRes)
async def call_start_v2(
    entity: str, project: str, req: CallStartReq, app: App, caller: Caller
) -> dict[str, Any]:
    [started] = await app.traces.start(caller, [req.start], project_from_path(entity, project))
    return started


@router.post("/v2/{entity}/{project}/call/end")
async def call_end_v2(
    entity: str, project: str, req: CallEndReq, app: App, caller: Caller
) -> dict[str, Any]:
    await app.traces.end(caller, [req.end], project_from_path(entity, project))
    return {}


@router.post("/call/start", response_model=CallStartRes)
async def call_start(req: CallStartReq, app: App, caller: Caller) -> dict[str, Any]:
    [started] = await app.traces.start(caller, [req.start])
    return started


@router.post("/call/end")
async def call_end(req: CallEndReq, app: App, caller: Caller) -> dict[str, Any]:
    await app.traces.end(caller, [req.end])
    return {}


@router.post("/call/upsert_batch")
async def call_upsert_batch(req: CallUpsertBatchReq, app: App, caller: Caller) -> dict[str, Any]:
    starts = [item.req.start for item in req.batch if isinstance(item, UpsertStart)]
    ends = [item.req.end for item in req.batch if not isinstance(item, UpsertStart)]
    started = iter(await app.traces.start(caller, starts))
    await app.traces.end(caller, ends)
    return {"res": [next(started) if isinstance(i, UpsertStart) else {} for i in req.batch]}


@router.post("/call/update")
async def call_update(req: CallUpdateReq, app: App, caller: Caller) -> dict[str, Any]:
    if not await app.traces.rename(caller, req.project_id, req.call_id, req.display_name):
        raise NotFound(f"no call {req.call_id} in project {req.project_id!r}")
    return {}


@router.post("/calls/delete", response_model=CallsDeleteRes)
async def calls_delete(req: CallsDeleteReq, app: App, caller: Caller) -> dict[str, Any]:
    return {"num_deleted": await app.traces.delete_calls(caller, req.project_id, req.call_ids)}
