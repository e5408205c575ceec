"""Weave objects: /obj/create, /obj/read, /objs/query, /obj/delete."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from imagegate.api.deps import App, Caller, authorize
from imagegate.errors import BadRequest, Deleted, NotFound
from imagegate.wire import ObjCreateReq, ObjCreateRes, ObjDeleteReq, ObjQueryReq, ObjReadReq

router = APIRouter(tags=["Objects"])


@router.post("/obj/create", response_model=ObjCreateRes)
async def obj_create(req: ObjCreateReq, app: App, caller: Caller) -> dict[str, Any]:
    obj = req.obj
    authorize(caller, obj.project_id, generate=True)
    await app.accounts.ensure_project(obj.project_id)
    digest = await app.traces.objects.create(
        obj.project_id,
        obj.object_id,
        obj.val,
        wb_user_id=caller.user_id,
        expected_digest=obj.expected_digest,
    )
    return {"digest": digest, "object_id": obj.object_id}


@router.post("/obj/read")
async def obj_read(req: ObjReadReq, app: App, caller: Caller) -> dict[str, Any]:
    authorize(caller, req.project_id)
    obj = await app.traces.objects.read(
        req.project_id, req.object_id, req.digest, metadata_only=bool(req.metadata_only)
    )
    if obj is None:
        raise NotFound(f"no object {req.object_id}:{req.digest} in project {req.project_id!r}")
    if obj["deleted_at"] is not None:
        raise Deleted(f"object {req.object_id}:{req.digest} was deleted", obj["deleted_at"])
    return {"obj": obj}


@router.post("/objs/query")
async def objs_query(req: ObjQueryReq, app: App, caller: Caller) -> dict[str, Any]:
    authorize(caller, req.project_id)
    flt = req.filter.model_dump(exclude_none=True) if req.filter else {}
    try:
        objs = await app.traces.objects.query(
            req.project_id,
            **flt,
            sort_by=[s.model_dump() for s in req.sort_by or []],
            limit=req.limit,
            offset=req.offset,
            metadata_only=bool(req.metadata_only),
        )
    except ValueError as exc:
        raise BadRequest(str(exc)) from exc
    return {"objs": objs}


@router.post("/obj/delete")
async def obj_delete(req: ObjDeleteReq, app: App, caller: Caller) -> dict[str, Any]:
    authorize(caller, req.project_id, generate=True)
    deleted = await app.traces.delete_object(req.project_id, req.object_id, req.digests)
    if not deleted:
        raise NotFound(f"no object {req.object_id} in project {req.project_id!r}")
    return {
        "num_deleted": len(deleted),
        "deleted_versions": [
            {k: v[k] for k in ("digest", "base_object_class", "leaf_object_class")} for v in deleted
        ],
    }
