"""POST /image/create."""

from __future__ import annotations

from collections.abc import Awaitable

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from imagegate import keepalive
from imagegate.api.deps import App, Caller, authorize
from imagegate.b64_answer import Base64Answer
from imagegate.generation import Generation
from imagegate.idempotency import request_hash
from imagegate.schemas import ImageGenerationCreateReq, ImageGenerationCreateRes
from imagegate.urls import public_base
from imagegate.weave_shape import weave_answer, weave_failure

router = APIRouter(tags=["Images"])


@router.post(
    "/image/create",
    response_model=ImageGenerationCreateRes,
    summary="Image Create",
    operation_id="image_create_image_create_post",
)
async def image_create(
    req: ImageGenerationCreateReq, request: Request, app: App, caller: Caller
) -> Response:
    authorize(caller, req.project_id, generate=True)
    track = req.track_llm_call is not False
    # Checked before anything is sent, so a bad request gets its 422 even when the answer
    # would start early.
    checked = await app.generation.check(req.project_id, req.inputs, track=track)

    def work() -> Awaitable[Generation]:
        return app.generation.generate(
            caller, req.project_id, req.inputs, track=track, checked=checked
        )

    # Read from the headers, not declared as parameters: the OpenAPI document stays the
    # Weave spec's. With a key (or as an SDK's own retry), a repeat gets the first
    # generation instead of paying for another; either way the answer is derived from
    # the Generation the same way.
    generation = app.idempotency.run_once(
        request.headers,
        project_id=req.project_id,
        user_id=caller.user_id,
        request_hash=request_hash(req),
        work=work,
    )
    base_url = public_base(request, app.settings.public_url, app.settings.allowed_hosts)
    link = app.generation.image_link(req.project_id, base_url)

    async def render(generation: Generation) -> Response:
        if all(image.stored for image in generation.images):
            return JSONResponse(weave_answer(generation, link))
        # Untracked: each image's base64 streamed from the file that holds it.
        answer = Base64Answer(app.files, req.project_id)
        return await answer.response(weave_answer(generation, link, answer.marker), {})

    interval = keepalive.interval_for(
        request.headers, app.settings.keepalive_interval, unasked=True
    )
    return await keepalive.early_answer(
        generation, interval=interval, render=render, failed=weave_failure
    )
