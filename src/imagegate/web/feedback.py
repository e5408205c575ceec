"""Reactions (👍/👎), notes and deleting a generation, from the cards and the detail page.

Stored as Weave feedback on the call's ref, so the SDK's `call.feedback` sees what the
gallery adds and the gallery shows what the SDK adds.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import RedirectResponse, Response

from imagegate.store.feedback import call_ref
from imagegate.web.detail import read_call
from imagegate.web.reactions import EMOJIS, NOTE, REACTION
from imagegate.web.render import render
from imagegate.web.session import (
    CSRF_FIELD,
    CSRF_HEADER,
    WebContext,
    WebError,
    read_form,
    require_user,
    safe_next,
)
from imagegate.wire import FeedbackCreate

router = APIRouter()
User = Annotated[WebContext, Depends(require_user)]

MAX_NOTE = 2000


async def _checked(
    request: Request, ctx: WebContext, entity: str, project: str, call_id: str
) -> tuple[dict[str, Any], dict[str, str]]:
    form = await read_form(request)
    ctx.check_csrf(form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER))
    call = await read_call(ctx, entity, project, call_id)  # members only; 404 otherwise
    return call, form


def _back(form: dict[str, str], fallback: str) -> Response:
    return RedirectResponse(safe_next(form.get("next") or fallback), status_code=303)


@router.post("/p/{entity}/{project}/calls/{call_id}/react")
async def react(entity: str, project: str, call_id: str, request: Request, ctx: User) -> Response:
    """Toggle the user's 👍 or 👎 on a generation."""
    call, form = await _checked(request, ctx, entity, project, call_id)
    emoji = form.get("emoji", "")
    if emoji not in EMOJIS:
        raise WebError(400, "Unknown reaction.")
    project_id, me = call["project_id"], ctx.user()
    ref = call_ref(project_id, call["id"])
    mine = {
        "$and": [
            {"$eq": [{"$getField": "weave_ref"}, {"$literal": ref}]},
            {"$eq": [{"$getField": "feedback_type"}, {"$literal": REACTION}]},
            {"$eq": [{"$getField": "wb_user_id"}, {"$literal": me.user_id}]},
            {"$eq": [{"$getField": "payload.emoji"}, {"$literal": emoji}]},
        ]
    }
    if not await ctx.app.traces.feedback.purge(project_id, {"$expr": mine}):
        item = FeedbackCreate(
            project_id=project_id, weave_ref=ref, feedback_type=REACTION, payload={"emoji": emoji}
        )
        await ctx.app.traces.add_feedback(me, [item])
    return _back(form, f"/ui/p/{project_id}/calls/{call['id']}")


@router.post("/p/{entity}/{project}/calls/{call_id}/notes")
async def add_note(
    entity: str, project: str, call_id: str, request: Request, ctx: User
) -> Response:
    call, form = await _checked(request, ctx, entity, project, call_id)
    text = form.get("note", "").strip()
    if not text or len(text) > MAX_NOTE:
        raise WebError(400, f"A note needs 1 to {MAX_NOTE} characters.")
    project_id = call["project_id"]
    item = FeedbackCreate(
        project_id=project_id,
        weave_ref=call_ref(project_id, call["id"]),
        feedback_type=NOTE,
        payload={"note": text},
    )
    await ctx.app.traces.add_feedback(ctx.user(), [item])
    return _back(form, f"/ui/p/{project_id}/calls/{call['id']}#notes")


@router.post("/p/{entity}/{project}/calls/{call_id}/notes/{note_id}/delete")
async def delete_note(
    entity: str, project: str, call_id: str, note_id: str, request: Request, ctx: User
) -> Response:
    """Authors remove their own notes."""
    call, form = await _checked(request, ctx, entity, project, call_id)
    project_id = call["project_id"]
    own = {
        "$and": [
            {"$eq": [{"$getField": "id"}, {"$literal": note_id}]},
            {"$eq": [{"$getField": "weave_ref"}, {"$literal": call_ref(project_id, call["id"])}]},
            {"$eq": [{"$getField": "wb_user_id"}, {"$literal": ctx.user().user_id}]},
        ]
    }
    if not await ctx.app.traces.feedback.purge(project_id, {"$expr": own}):
        raise WebError(404, "No such note of yours.")
    return _back(form, f"/ui/p/{project_id}/calls/{call['id']}#notes")


@router.get("/p/{entity}/{project}/calls/{call_id}/delete")
async def confirm_delete(entity: str, project: str, call_id: str, ctx: User) -> Response:
    call = await read_call(ctx, entity, project, call_id)
    prompt = (call.get("inputs") or {}).get("prompt") or call.get("display_name") or call["op_name"]
    return render(
        ctx,
        "delete.html",
        call=call,
        prompt=str(prompt),
        entity=entity,
        project=project,
        project_id=call["project_id"],
    )


@router.post("/p/{entity}/{project}/calls/{call_id}/delete")
async def delete(entity: str, project: str, call_id: str, request: Request, ctx: User) -> Response:
    call, _form = await _checked(request, ctx, entity, project, call_id)
    await ctx.app.traces.delete_calls(ctx.user(), call["project_id"], [call["id"]])
    return RedirectResponse(f"/ui/p/{call['project_id']}", status_code=303)
