"""Signing in with an API key, and out again."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from imagegate.store.accounts import hash_key
from imagegate.web.render import render
from imagegate.web.session import (
    CSRF_FIELD,
    SESSION_COOKIE,
    SESSION_MAX_AGE,
    clear_cookie,
    read_form,
    safe_next,
    set_cookie,
    web_context,
)

router = APIRouter()


@router.get("/", include_in_schema=False)
async def home(request: Request) -> Response:
    ctx = await web_context(request)
    target = "/ui/projects" if ctx.principal else "/ui/signin"
    return ctx.finish(RedirectResponse(target, status_code=303))


@router.get("/signin")
async def signin_form(request: Request, next: str | None = None) -> Response:
    ctx = await web_context(request)
    if ctx.principal is not None:
        return ctx.finish(RedirectResponse(safe_next(next), status_code=303))
    return render(ctx, "signin.html", next=safe_next(next), error=None)


@router.post("/signin")
async def signin(request: Request) -> Response:
    ctx = await web_context(request)
    form = await read_form(request)
    ctx.check_csrf(form.get(CSRF_FIELD))
    key = form.get("api_key", "").strip()
    next_path = safe_next(form.get("next"))
    principal = await ctx.app.accounts.authenticate(key) if key else None
    if principal is None:
        return render(
            ctx, "signin.html", status_code=401, next=next_path, error="That API key is not valid."
        )
    response = RedirectResponse(next_path, status_code=303)
    set_cookie(
        request,
        response,
        SESSION_COOKIE,
        await ctx.app.sessions.create(hash_key(key), SESSION_MAX_AGE),
        SESSION_MAX_AGE,
    )
    return ctx.finish(response)


@router.post("/signout")
async def signout(request: Request) -> Response:
    ctx = await web_context(request)
    form = await read_form(request)
    ctx.check_csrf(form.get(CSRF_FIELD))
    await ctx.app.sessions.end(request.cookies.get(SESSION_COOKIE, ""))  # for every copy
    response = RedirectResponse("/ui/signin", status_code=303)
    clear_cookie(request, response, SESSION_COOKIE)
    return response
