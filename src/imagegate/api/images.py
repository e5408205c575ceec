"""POST /image/create."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from imagegate.api.deps import App, Caller, authorize
from imagegate.schemas import ImageGenerationCreateReq, ImageGenerationCreateRes

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
    base_url = app.settings.public_url or str(request.base_url)
    return await app.generation.create(caller, req, base_url)
