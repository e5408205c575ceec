"""The Traces page: every call of a project, of any op, as trees by trace."""

from __future__ import annotations

import json
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from starlette.responses import RedirectResponse, Response

from imagegate.errors import NotFound
from imagegate.names import split_project_id
from imagegate.web.render import render
from imagegate.web.session import WebContext, project_of, require_user
from imagegate.web.trace_view import CallNode, Media, build_trees

router = APIRouter()
User = Annotated[WebContext, Depends(require_user)]

TRACES_PER_PAGE = 20
MAX_CALLS_SHOWN = 2000  # per page: a giant trace is cut, and says so


@router.get("/p/{entity}/{project}/traces")
async def traces_page(entity: str, project: str, request: Request, ctx: User) -> Response:
    project_id = project_of(ctx, entity, project)
    raw = request.query_params.get("offset", "0")
    offset = min(int(raw), 1_000_000) if raw.isdigit() else 0
    focus = request.query_params.get("call", "")[:64]
    calls = ctx.app.calls
    if focus:
        call = await calls.read(project_id, focus)
        if call is None:
            raise NotFound("No such call.")
        trace_ids = [call["trace_id"]]
        more = False
    else:
        roots = [
            c["trace_id"]
            async for c in calls.stream(
                project_id,
                filter={"trace_roots_only": True},
                sort_by=[{"field": "started_at", "direction": "desc"}],
                limit=TRACES_PER_PAGE + 1,
                offset=offset,
                columns=["trace_id"],
            )
        ]
        trace_ids, more = list(dict.fromkeys(roots[:TRACES_PER_PAGE])), len(roots) > TRACES_PER_PAGE
    members = [
        c
        async for c in calls.stream(
            project_id,
            filter={"trace_ids": trace_ids},
            sort_by=[{"field": "started_at", "direction": "asc"}],
            limit=MAX_CALLS_SHOWN + 1,
        )
    ] if trace_ids else []  # fmt: skip
    truncated = len(members) > MAX_CALLS_SHOWN
    trees = build_trees(members[:MAX_CALLS_SHOWN])
    order = {trace_id: i for i, trace_id in enumerate(trace_ids)}
    by_id = {c["id"]: c["trace_id"] for c in members}
    trees.sort(key=lambda node: order.get(by_id.get(node.id, ""), len(order)))
    images = await _images(ctx, project_id, trees)
    return render(
        ctx,
        "traces.html",
        entity=entity,
        project=project,
        project_id=project_id,
        trees=trees,
        images=images,
        focus=focus,
        more=more,
        next_offset=offset + TRACES_PER_PAGE,
        offset=offset,
        truncated=truncated,
    )


async def _images(ctx: WebContext, project_id: str, trees: list[CallNode]) -> set[str]:
    """Digests of the media that are images: Content says so in its metadata file."""
    images: set[str] = set()
    checked: dict[str, bool] = {}
    stack = list(trees)
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        for media in node.all_media():
            if media.metadata is None:
                images.add(media.digest)
            elif media.metadata not in checked:
                checked[media.metadata] = await _is_image(ctx, project_id, media)
            if media.metadata is not None and checked[media.metadata]:
                images.add(media.digest)
    return images


async def _is_image(ctx: WebContext, project_id: str, media: Media) -> bool:
    assert media.metadata is not None
    data = await ctx.app.files.get(project_id, media.metadata)
    try:
        metadata = json.loads(data) if data else {}
    except ValueError:
        return False
    return isinstance(metadata, dict) and str(metadata.get("mimetype", "")).startswith("image/")


async def weave_call_link(entity: str, project: str, call_id: str) -> Response:
    """Where the Weave SDK's printed call links (`BASE/entity/project/r/call/ID`) land."""
    return RedirectResponse(
        f"/ui/p/{_link_project(entity, project)}/traces?{urlencode({'call': call_id})}",
        status_code=307,
    )


async def weave_project_link(entity: str, project: str) -> Response:
    """Where `weave.init`'s "View Weave data at BASE/entity/project/weave" lands."""
    return RedirectResponse(f"/ui/p/{_link_project(entity, project)}/traces", status_code=307)


def _link_project(entity: str, project: str) -> str:
    try:
        split_project_id(f"{entity}/{project}")
    except ValueError as exc:
        raise NotFound("No such project.") from exc
    return f"{entity}/{project}"
