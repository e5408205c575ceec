"""OpenAI's Images API: POST /v1/images/generations, POST /v1/images/edits, GET /v1/models.

Thin: the translation is `imagegate.openai_door`, the work the generation service's.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from imagegate import openai_door, openai_request
from imagegate.api.deps import App, Caller
from imagegate.schemas import ImageGenerationCreateReq

router = APIRouter(prefix="/v1", tags=["OpenAI Images API"])


@router.post("/images/generations", summary="Create images (OpenAI's Images API)")
async def create_images(request: Request, app: App, caller: Caller) -> Response:
    inputs = await openai_request.read_json(request)
    project_id = openai_request.project_for(caller, request.headers)
    req = ImageGenerationCreateReq(project_id=project_id, inputs=inputs)
    return await openai_door.answer(app, caller, openai_request.DoorRequest(req), request)


@router.post("/images/edits", summary="Edit images (OpenAI's Images API, multipart)")
async def edit_images(request: Request, app: App, caller: Caller) -> Response:
    project_id = openai_request.project_for(caller, request.headers)
    inputs, uploads = await openai_request.read_form(request)
    req = ImageGenerationCreateReq(project_id=project_id, inputs=inputs)
    files = app.generation.check_edit(inputs, uploads, app.settings.max_upload_bytes)
    door = openai_request.DoorRequest(req, files)
    return await openai_door.answer(app, caller, door, request)


@router.get("/models", summary="List models (OpenAI's shape)")
async def list_models(app: App, _caller: Caller) -> dict[str, Any]:
    return openai_door.list_models(app)
