"""Images for signed-in browsers: full size (inline or as a download), thumbnails, and
the pages' static files."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from imagegate.digest import is_digest
from imagegate.names import split_project_id
from imagegate.urls import MIME_EXTENSIONS, image_headers, sniff_image_type
from imagegate.web.render import STATIC
from imagegate.web.session import WebContext, WebError, require_entity, require_user
from imagegate.web.thumbs import ImageTooLarge, ThumbnailCache

router = APIRouter()
User = Annotated[WebContext, Depends(require_user)]

# Content-addressed bytes never change; `private` keeps them out of shared caches.
IMMUTABLE = "private, max-age=31536000, immutable"


def _checked(ctx: WebContext, entity: str, project: str, digest: str) -> str:
    try:
        split_project_id(f"{entity}/{project}")
    except ValueError as exc:
        raise WebError(404, "No such image.") from exc
    if not is_digest(digest):
        raise WebError(404, "No such image.")
    require_entity(ctx, entity)
    return f"{entity}/{project}"


@router.get("/img/{entity}/{project}/{name}")
async def image(
    entity: str, project: str, name: str, ctx: User, download: bool = False
) -> Response:
    digest = name.partition(".")[0]  # an extension is cosmetic: the bytes decide the type
    project_id = _checked(ctx, entity, project, digest)
    data = await ctx.app.files.get(project_id, digest)
    mimetype = sniff_image_type(data) if data is not None else ""
    if data is None or mimetype not in MIME_EXTENSIONS:
        raise WebError(404, "No such image.")  # only images: no HTML or script by digest
    filename = f"{project}-{digest[:12]}.{MIME_EXTENSIONS[mimetype]}"
    disposition = "attachment" if download else "inline"
    return Response(
        data,
        media_type=mimetype,
        headers={
            "Cache-Control": IMMUTABLE,
            **image_headers(mimetype),
            "Content-Disposition": f'{disposition}; filename="{filename}"',
        },
    )


@router.get("/thumb/{entity}/{project}/{name}")
async def thumbnail(entity: str, project: str, name: str, request: Request, ctx: User) -> Response:
    digest = name.partition(".")[0]
    project_id = _checked(ctx, entity, project, digest)
    cache: ThumbnailCache = request.app.state.web_thumbnails
    try:
        data = await cache.get(project_id, digest, lambda: ctx.app.files.get(project_id, digest))
    except ImageTooLarge as exc:
        raise WebError(422, str(exc)) from exc
    if data is None:
        raise WebError(404, "No such image.")
    return Response(
        data,
        media_type="image/webp",
        headers={"Cache-Control": IMMUTABLE, "X-Content-Type-Options": "nosniff"},
    )


@router.get("/static/{name}")
async def static(name: str) -> Response:
    # Public: the sign-in page needs its stylesheet too. Only packaged files are served.
    if name not in STATIC:
        raise WebError(404, "No such file.")
    data, content_type, _ = STATIC[name]
    return Response(
        data,
        media_type=content_type,
        headers={
            "Cache-Control": "public, max-age=31536000, immutable",
            "X-Content-Type-Options": "nosniff",
        },
    )
