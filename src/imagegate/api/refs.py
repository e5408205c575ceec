"""/refs/read_batch: values of weave:/// refs to objects, ops and table rows."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from imagegate.api.deps import App, Caller
from imagegate.wire import RefsReadBatchReq

router = APIRouter(tags=["Refs"])


@router.post("/refs/read_batch")
async def refs_read_batch(req: RefsReadBatchReq, app: App, caller: Caller) -> dict[str, Any]:
    return {"vals": await app.traces.read_refs(caller, req.refs)}
