"""One generation: every image full size, its parameters, timing, usage, cost, errors."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from starlette.responses import Response

from imagegate.names import split_project_id
from imagegate.store.gallery import GalleryStore
from imagegate.weave_shape import generation_from_call
from imagegate.web.reactions import reactions_for
from imagegate.web.render import PAGE_HEADERS, render
from imagegate.web.session import WebContext, WebError, require_entity, require_user
from imagegate.web.view import call_view

router = APIRouter()
User = Annotated[WebContext, Depends(require_user)]


async def read_call(ctx: WebContext, entity: str, project: str, call_id: str) -> dict[str, Any]:
    """A member's call in wire form (costs included), or a 404 page."""
    try:
        split_project_id(f"{entity}/{project}")
    except ValueError as exc:
        raise WebError(404, "No such generation.") from exc
    require_entity(ctx, entity)
    call = await ctx.app.calls.read(f"{entity}/{project}", call_id[:64], include_costs=True)
    if call is None:
        raise WebError(404, "No such generation.")
    return call


@router.get("/p/{entity}/{project}/calls/{call_id}.json")
async def call_json(entity: str, project: str, call_id: str, ctx: User) -> Response:
    """The stored call exactly as /call/read returns it, for the browser."""
    call = await read_call(ctx, entity, project, call_id)
    body = json.dumps({"call": call}, indent=2, ensure_ascii=False)
    # nosniff + JSON type: the prompt inside can never be rendered as HTML.
    return Response(body, media_type="application/json", headers=PAGE_HEADERS)


@router.get("/p/{entity}/{project}/calls/{call_id}")
async def detail_page(entity: str, project: str, call_id: str, ctx: User) -> Response:
    call = await read_call(ctx, entity, project, call_id)
    names = await GalleryStore(ctx.app.engine).user_names([call.get("wb_user_id")])
    view = call_view(generation_from_call(call), names)
    return render(
        ctx,
        "detail.html",
        call=view,
        entity=entity,
        project=project,
        project_id=f"{entity}/{project}",
        revised=[img.revised_prompt for img in view.images if img.revised_prompt],
        reactions=(await reactions_for(ctx, call["project_id"], [call["id"]]))[call["id"]],
    )
