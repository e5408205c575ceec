"""Files: Weave's /file(s)/create and /file(s)/content, and signed image URLs."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request, UploadFile
from fastapi.responses import Response

from imagegate.api.deps import App, Caller, authorize, current_principal
from imagegate.digest import is_digest, weave_digest
from imagegate.errors import BadRequest, InvalidInput, NotFound, Unauthorized
from imagegate.names import split_project_id
from imagegate.schemas import FileContentReadReq, FileCreateRes
from imagegate.urls import MIME_EXTENSIONS, image_headers, signature_valid, sniff_image_type

router = APIRouter(tags=["Files"])

IMMUTABLE = "private, max-age=31536000, immutable"  # content-addressed: never changes


@router.post("/file/create", response_model=FileCreateRes)
@router.post("/files/create", response_model=FileCreateRes, include_in_schema=False)
async def file_create(
    app: App,
    caller: Caller,
    project_id: Annotated[str, Form()],
    file: UploadFile,
    expected_digest: Annotated[str | None, Form()] = None,
) -> dict[str, Any]:
    try:
        split_project_id(project_id)
    except ValueError as exc:
        raise InvalidInput(["body", "project_id"], str(exc), project_id) from exc
    authorize(caller, project_id, generate=True)  # viewers only read
    data = await file.read()
    if expected_digest is not None and weave_digest(data) != expected_digest:
        raise BadRequest(
            f"file digest {weave_digest(data)} does not match expected_digest {expected_digest}"
        )
    await app.accounts.ensure_project(project_id)
    return {"digest": await app.files.put(project_id, data)}


@router.post(
    "/file/content",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
@router.post("/files/content", response_class=Response, include_in_schema=False)
async def file_content(req: FileContentReadReq, app: App, caller: Caller) -> Response:
    authorize(caller, req.project_id)
    data = await app.files.get(req.project_id, req.digest)
    if data is None:
        raise NotFound(f"no file {req.digest} in project {req.project_id!r}")
    return Response(data, media_type="application/octet-stream")


@router.get(
    "/files/{entity}/{project}/{name}",
    response_class=Response,
    responses={200: {"content": {t: {} for t in MIME_EXTENSIONS}}},
)
async def file_by_url(
    entity: str,
    project: str,
    name: str,
    request: Request,
    app: App,
    sig: str | None = None,
    exp: str | None = None,
) -> Response:
    """An image by URL: the `sig` from `response_format: "url"`, or an API key."""
    digest = name.partition(".")[0]  # the extension is cosmetic; the bytes decide the type
    project_id = f"{entity}/{project}"
    try:
        split_project_id(project_id)
    except ValueError as exc:
        raise NotFound("no such file") from exc
    if not is_digest(digest):
        raise NotFound("no such file")
    if sig is not None:
        if not signature_valid(app.signing_key, project_id, digest, exp, sig):
            raise Unauthorized("invalid or expired URL signature")
    else:
        authorize(await current_principal(request), project_id)
    data = await app.files.get(project_id, digest)
    if data is None:
        raise NotFound("no such file")
    mimetype = sniff_image_type(data)
    return Response(
        data,
        media_type=mimetype,
        headers={"Cache-Control": IMMUTABLE, **image_headers(mimetype)},
    )
