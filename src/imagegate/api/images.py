"""POST /image/create."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from imagegate.api.deps import App, Caller, authorize
from imagegate.idempotency import idempotency_key, request_hash
from imagegate.schemas import ImageGenerationCreateReq, ImageGenerationCreateRes
from imagegate.urls import public_base

router = APIRouter(tags=["Images"])


@router.post(
    "/image/create",
    response_model=ImageGenerationCreateRes,
    summary="Image Create",
    operation_id="image_create_image_create_post",
)
async def image_create(
    req: ImageGenerationCreateReq, request: Request, app: App, caller: Caller
) -> dict[str, Any]:
    authorize(caller, req.project_id)
    base_url = public_base(request, app.settings.public_url, app.settings.allowed_hosts)
    # Read from the headers, not declared as parameters: the OpenAPI document stays the
    # Weave spec's. With a key, a retry replays the first answer instead of generating.
    key = idempotency_key(request.headers)
    if key is None:
        return await app.generation.create(caller, req, base_url)
    return await app.idempotency.run(
        project_id=req.project_id,
        user_id=caller.user_id,
        key=key,
        request_hash=request_hash(req),
        work=lambda: app.generation.create(caller, req, base_url),
        base_url=base_url,  # a replay's URLs are signed anew for this request's base
    )
