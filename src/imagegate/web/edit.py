"""The Edit action: an image of a generation as the input of an edit, with an optional
mask upload and a prompt. The edit is checked and recorded like any other
(op `weave.image_edit_create`), then its page is shown."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.responses import RedirectResponse, Response

from imagegate.digest import is_digest
from imagegate.errors import BudgetExceeded, Forbidden, InvalidInput, NotFound, RateLimited
from imagegate.schemas import ImageGenerationRequestInputs
from imagegate.uploads import Upload
from imagegate.web.render import render
from imagegate.web.session import CSRF_FIELD, WebContext, project_of, require_user

router = APIRouter()
User = Annotated[WebContext, Depends(require_user)]


def editors(ctx: WebContext) -> list[str]:
    """The models this server can edit with now."""
    return [
        name
        for name in ctx.app.catalog.names
        if (spec := ctx.app.catalog.models[name]).edits
        and spec.provider in ctx.app.generation.providers
        and spec.state() != "shut_down"
    ]


async def _source(ctx: WebContext, project_id: str, digest: str) -> bytes:
    data = await ctx.app.files.get(project_id, digest) if is_digest(digest) else None
    if data is None:
        raise NotFound("No such image.")
    return data


def _page(
    ctx: WebContext, project_id: str, digest: str, values: dict[str, Any], error: str | None = None
) -> Response:
    models = editors(ctx)
    if values.get("model") not in models:
        values["model"] = "local/procedural" if "local/procedural" in models else models[0]
    entity, project = project_id.split("/", 1)
    return render(
        ctx,
        "edit.html",
        status_code=422 if error else 200,
        entity=entity,
        project=project,
        project_id=project_id,
        digest=digest,
        models=models,
        values=values,
        error=error,
    )


@router.get("/p/{entity}/{project}/edit")
async def edit_form(entity: str, project: str, ctx: User, image: str = "") -> Response:
    project_id = project_of(ctx, entity, project)
    await _source(ctx, project_id, image)
    return _page(ctx, project_id, image, {})


@router.post("/p/{entity}/{project}/edit")
async def edit(entity: str, project: str, request: Request, ctx: User) -> Response:
    project_id = project_of(ctx, entity, project)
    if not ctx.user().can_generate(entity):
        raise Forbidden(f"You are a viewer in team {entity}: viewers cannot edit images.")
    form = await request.form(max_files=2)
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    ctx.check_csrf(fields.get(CSRF_FIELD))
    digest = fields.get("image", "")
    source = await _source(ctx, project_id, digest)
    uploads = [Upload("image", f"{digest}.png", source)]
    mask = form.get("mask")
    if isinstance(mask, UploadFile) and mask.filename:
        uploads.append(Upload("mask", mask.filename, await mask.read()))
    await form.close()
    values = {"model": fields.get("model", ""), "prompt": fields.get("prompt", "")}
    try:
        inputs = ImageGenerationRequestInputs.model_validate(values)
        files = ctx.app.generation.check_edit(inputs, uploads, ctx.app.settings.max_upload_bytes)
        result = await ctx.app.generation.generate(ctx.user(), project_id, inputs, edit=files)
    except (InvalidInput, BudgetExceeded, RateLimited) as exc:
        return _page(ctx, project_id, digest, values, exc.message)
    except ValidationError as exc:
        return _page(ctx, project_id, digest, values, str(exc.errors()[0]["msg"]))
    return RedirectResponse(f"/ui/p/{project_id}/calls/{result.call_id}", status_code=303)
