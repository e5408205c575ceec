"""Your API keys, your teams' members, and budgets, in the browser. Every change goes
through imagegate.admin, like the HTTP admin API: the same checks, the same audit log."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from starlette.responses import RedirectResponse, Response

from imagegate.errors import ImagegateError
from imagegate.store.budgets import Scope
from imagegate.web.render import render
from imagegate.web.session import (
    CSRF_FIELD,
    WebContext,
    WebError,
    read_form,
    require_entity,
    require_user,
)

router = APIRouter()
User = Annotated[WebContext, Depends(require_user)]


def _web(exc: ImagegateError) -> WebError:
    return WebError(exc.status_code if exc.status_code < 500 else 500, exc.message)


async def _keys_page(ctx: WebContext, new_key: str | None = None) -> Response:
    keys = await ctx.app.admin.own_keys(ctx.user())
    return render(
        ctx,
        "keys.html",
        keys=keys,
        new_key=new_key,
        current_key_id=ctx.user().key_id,
    )


@router.get("/keys")
async def keys_page(ctx: User) -> Response:
    return await _keys_page(ctx)


@router.post("/keys")
async def create_key(ctx: User) -> Response:
    form = await read_form(ctx.request)
    ctx.check_csrf(form.get(CSRF_FIELD))
    new = await ctx.app.admin.create_own_key(ctx.user())
    # Shown on this answer only (no-store, like every page): it is kept as a hash.
    return await _keys_page(ctx, new_key=new.key)


@router.post("/keys/{key_id}/revoke")
async def revoke_key(key_id: str, ctx: User) -> Response:
    form = await read_form(ctx.request)
    ctx.check_csrf(form.get(CSRF_FIELD))
    try:
        await ctx.app.admin.revoke_own_key(ctx.user(), key_id)
    except ImagegateError as exc:
        raise _web(exc) from exc
    # Revoking the key this browser signed in with ends its session: sign in again.
    target = "/ui/signin" if key_id == ctx.user().key_id else "/ui/keys"
    return RedirectResponse(target, status_code=303)


@router.get("/teams/{entity}")
async def team_page(entity: str, ctx: User) -> Response:
    require_entity(ctx, entity)
    members = await ctx.app.admin.members(ctx.user(), entity)
    budgets = await ctx.app.admin.budget_status(ctx.user(), "entity", entity)
    return render(
        ctx,
        "team.html",
        entity=entity,
        members=members,
        budgets=budgets,
        can_manage=ctx.user().can_manage(entity),
        roles=("owner", "member", "viewer"),
    )


@router.post("/teams/{entity}/members")
async def set_member(entity: str, ctx: User) -> Response:
    require_entity(ctx, entity)
    form = await read_form(ctx.request)
    ctx.check_csrf(form.get(CSRF_FIELD))
    user = form.get("user", "").strip()
    try:
        if form.get("remove"):
            await ctx.app.admin.remove_member(ctx.user(), entity, user)
        else:
            await ctx.app.admin.set_member(ctx.user(), entity, user, form.get("role", "member"))
    except ImagegateError as exc:
        raise _web(exc) from exc
    return RedirectResponse(f"/ui/teams/{entity}", status_code=303)


@router.post("/budget")
async def set_budget(ctx: User) -> Response:
    """Set or remove the budget of a project (`project` = entity/project) or a team."""
    form = await read_form(ctx.request)
    ctx.check_csrf(form.get(CSRF_FIELD))
    project = form.get("project", "")
    scope: Scope = "project" if project else "entity"
    target = project or form.get("entity", "")
    require_entity(ctx, target.split("/", 1)[0])
    try:
        if form.get("remove"):
            await ctx.app.admin.delete_budget(ctx.user(), scope, target)
        else:
            try:
                limit = float(form.get("limit_usd", ""))
            except ValueError as exc:
                raise WebError(400, "The limit must be a number of US dollars.") from exc
            await ctx.app.admin.set_budget(
                ctx.user(),
                scope,
                target,
                period=form.get("period", "monthly"),
                limit_usd=limit,
                hard=form.get("hard") == "on",
            )
    except ImagegateError as exc:
        raise _web(exc) from exc
    back = f"/ui/p/{target}" if project else f"/ui/teams/{target}"
    return RedirectResponse(back, status_code=303)


@router.get("/admin")
async def admin_page(ctx: User) -> Response:
    """Server admins: every user with their teams and roles, every team, the audit log."""
    try:
        users = await ctx.app.admin.users(ctx.user())
        entries = await ctx.app.admin.audit_log(ctx.user(), limit=50)
    except ImagegateError as exc:
        raise _web(exc) from exc
    teams = await ctx.app.admin.visible_teams(ctx.user())
    return render(ctx, "admin.html", users=users, teams=teams, entries=entries)


@router.post("/admin/teams")
async def admin_create_team(ctx: User) -> Response:
    form = await read_form(ctx.request)
    ctx.check_csrf(form.get(CSRF_FIELD))
    name = form.get("name", "").strip()
    try:
        await ctx.app.admin.create_team(ctx.user(), name)
        if owner := form.get("owner", "").strip():
            await ctx.app.admin.set_member(ctx.user(), name, owner, "owner")
    except ImagegateError as exc:
        raise _web(exc) from exc
    return RedirectResponse(f"/ui/teams/{name}", status_code=303)
