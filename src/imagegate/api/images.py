"""POST /image/create."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from fastapi import APIRouter, Request

from imagegate.api.deps import App, Caller, authorize
from imagegate.generation import Generation
from imagegate.idempotency import idempotency_key, request_hash
from imagegate.schemas import ImageGenerationCreateReq, ImageGenerationCreateRes
from imagegate.weave_shape import weave_answer

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
    authorize(caller, req.project_id, generate=True)
    track = req.track_llm_call is not False

    def work() -> Awaitable[Generation]:
        return app.generation.generate(caller, req.project_id, req.inputs, track=track)

    # Read from the headers, not declared as parameters: the OpenAPI document stays the
    # Weave spec's. With a key, a retry replays the first generation instead of paying
    # for another; either way the answer is derived from the Generation the same way.
    key = idempotency_key(request.headers)
    if key is None:
        generation = await work()
    else:
        generation = await app.idempotency.run(
            project_id=req.project_id,
            user_id=caller.user_id,
            key=key,
            request_hash=request_hash(req),
            work=work,
        )
    base_url = app.settings.public_url or str(request.base_url)
    return weave_answer(generation, app.generation.image_link(req.project_id, base_url))
