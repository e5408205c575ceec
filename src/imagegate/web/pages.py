"""The projects page and a project's gallery (with its infinitely scrolling cards)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import RedirectResponse, Response

from imagegate.errors import BadRequest, Forbidden
from imagegate.names import split_project_id
from imagegate.store.gallery import GalleryStore
from imagegate.store.query_terms import QueryError
from imagegate.weave_shape import generation_from_call
from imagegate.web.reactions import reactions_for
from imagegate.web.render import render, render_fragment
from imagegate.web.session import (
    CSRF_FIELD,
    WebContext,
    project_of,
    read_form,
    require_entity,
    require_user,
)
from imagegate.web.view import PAGE_SIZE, CallView, Filters, call_view

router = APIRouter()
User = Annotated[WebContext, Depends(require_user)]

COUNT_CAP = 10_000
SUCCESS = {"$expr": {"$eq": [{"$getField": "summary.weave.status"}, {"$literal": "success"}]}}


def gallery_store(ctx: WebContext) -> GalleryStore:
    return GalleryStore(ctx.app.engine)


@router.get("/projects")
async def projects_page(ctx: User) -> Response:
    entities = sorted(ctx.user().entities)
    projects = await gallery_store(ctx).projects(entities)
    covers: dict[str, str] = {}
    for project in projects[:100]:  # one indexed query each; the page shows a cover per card
        async for call in ctx.app.calls.stream(
            project.id,
            query=SUCCESS,
            sort_by=[{"field": "started_at", "direction": "desc"}],
            limit=1,
            columns=["output"],
        ):
            if images := generation_from_call(call).images:
                covers[project.id] = images[0].digest
    return render(ctx, "projects.html", projects=projects, covers=covers, entities=entities)


@router.get("/new")
async def new_project(ctx: User, entity: str = "", name: str = "") -> Response:
    """Old links to the "new project" form: check the name, open the generate form."""
    project_id = _new_project_id(ctx, entity, name)
    return RedirectResponse(f"/ui/p/{project_id}/generate", status_code=303)


@router.post("/new")
async def create_project(ctx: User) -> Response:
    """The projects page's "New project": creates the project, empty, and opens it."""
    form = await read_form(ctx.request)
    ctx.check_csrf(form.get(CSRF_FIELD))
    project_id = _new_project_id(ctx, form.get("entity", ""), form.get("name", ""))
    entity = project_id.split("/", 1)[0]
    if not ctx.user().can_generate(entity):
        raise Forbidden(f"You are a viewer in team {entity}: viewers cannot create projects.")
    await ctx.app.accounts.ensure_project(project_id)
    return RedirectResponse(f"/ui/p/{project_id}", status_code=303)


def _new_project_id(ctx: WebContext, entity: str, name: str) -> str:
    try:
        split_project_id(f"{entity}/{name.strip()}")
    except ValueError as exc:
        raise BadRequest(str(exc)) from exc
    require_entity(ctx, entity)
    return f"{entity}/{name.strip()}"


async def _query(
    ctx: WebContext, project_id: str, filters: Filters
) -> tuple[dict[str, Any], dict[str, Any] | None, list[tuple[str, str]]]:
    """(filter, query) for the calls store, and the entity's members (id, name)."""
    store = gallery_store(ctx)
    members = await store.members(project_id.split("/")[0])
    user_id = None
    if filters.user:
        # A former member's generations stay findable by their name.
        by_name = {name: uid for uid, name in members}
        user_id = by_name.get(filters.user) or await store.user_id(filters.user)
    try:
        flt, query = filters.to_query(user_id)
    except ValueError as exc:
        raise BadRequest(str(exc)) from exc
    return flt, query, members


async def _cards(
    ctx: WebContext,
    project_id: str,
    flt: dict[str, Any],
    query: dict[str, Any] | None,
    members: list[tuple[str, str]],
    offset: int,
    before: tuple[datetime, str] | None,
) -> tuple[list[CallView], str | None]:
    """One page of calls, newest first, and the cursor of the next page if more follow."""
    try:
        calls = [
            call
            async for call in ctx.app.calls.stream(
                project_id,
                filter=flt,
                query=query,
                sort_by=[{"field": "started_at", "direction": "desc"}],
                limit=PAGE_SIZE + 1,
                offset=0 if before else offset,
                include_costs=True,
                before=before,
            )
        ]
    except QueryError as exc:
        raise BadRequest(str(exc)) from exc
    names = dict(members)
    names |= await gallery_store(ctx).user_names(
        c["wb_user_id"] for c in calls if c["wb_user_id"] not in names
    )
    cursor = None
    if len(calls) > PAGE_SIZE:
        last = calls[PAGE_SIZE - 1]
        cursor = f"{last['started_at']}~{last['id']}"
    views = [call_view(generation_from_call(call), names) for call in calls[:PAGE_SIZE]]
    return views, cursor


def _offset(request: Request) -> int:
    raw = request.query_params.get("offset", "0")
    return min(int(raw), 1_000_000) if raw.isdigit() else 0


def _before(request: Request) -> tuple[datetime, str] | None:
    """The keyset cursor "started_at~id" of "load more" links; a bad one reads as none."""
    at, _, call_id = request.query_params.get("before", "").partition("~")
    try:
        started = datetime.fromisoformat(at)
    except ValueError:
        return None
    if not call_id or len(call_id) > 36 or started.tzinfo is None:
        return None
    return started, call_id


async def _count(ctx: WebContext, project_id: str, **where: Any) -> str:
    """How many calls match, as the page shows it: exact up to COUNT_CAP, then "N+"
    (an exact count of a million calls reads a million index entries per page load)."""
    count, more = await ctx.app.calls.count(project_id, limit=COUNT_CAP, **where)
    return f"{count:,}+" if more else f"{count:,}"


@router.get("/p/{entity}/{project}")
async def gallery_page(entity: str, project: str, request: Request, ctx: User) -> Response:
    project_id = project_of(ctx, entity, project)
    filters = Filters.parse(request.query_params)
    offset, before = _offset(request), _before(request)
    flt, query, members = await _query(ctx, project_id, filters)
    cards, cursor = await _cards(ctx, project_id, flt, query, members, offset, before)
    total = await _count(ctx, project_id, filter={"op_names": flt["op_names"]})
    matching = total
    if filters.active:
        matching = await _count(ctx, project_id, filter=flt, query=query)
    models = sorted(set(ctx.app.catalog.names) | ({filters.model} if filters.model else set()))
    budgets = await ctx.app.budgets.status(project_id)
    return render(
        ctx,
        "gallery.html",
        project_id=project_id,
        entity=entity,
        project=project,
        cards=cards,
        cursor=cursor,
        paged=bool(offset or before),
        filters=filters,
        reactions=await reactions_for(ctx, project_id, [c.id for c in cards]),
        members=[name for _, name in members],
        models=models,
        total=total,
        matching=matching,
        budgets=budgets,
        own_budget=next((b for b in budgets if b.budget.scope == "project"), None),
        can_manage=ctx.user().can_manage(entity),
    )


@router.get("/p/{entity}/{project}/cards")
async def gallery_cards(entity: str, project: str, request: Request, ctx: User) -> Response:
    """The next page of cards as an HTML fragment, for infinite scroll."""
    project_id = project_of(ctx, entity, project)
    filters = Filters.parse(request.query_params)
    offset, before = _offset(request), _before(request)
    flt, query, members = await _query(ctx, project_id, filters)
    cards, cursor = await _cards(ctx, project_id, flt, query, members, offset, before)
    values: dict[str, Any] = {
        "cards": cards,
        "cursor": cursor,
        "filters": filters,
        "project_id": project_id,
        "reactions": await reactions_for(ctx, project_id, [c.id for c in cards]),
    }
    return render_fragment(ctx, "_cards.html", **values)
