"""Per-project figures: spend, and the budgets over a project."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter

from imagegate.api.deps import App, Caller, authorize
from imagegate.api.teams import BudgetSpec, budgets_body
from imagegate.errors import InvalidInput, NotFound
from imagegate.names import split_project_id
from imagegate.store.spend import project_spend

router = APIRouter(tags=["Projects"])


@router.get("/projects/{entity}/{project}/spend")
async def spend(
    entity: str,
    project: str,
    app: App,
    caller: Caller,
    since: datetime | None = None,
    until: datetime | None = None,
) -> dict[str, Any]:
    """What the project's generations cost (USD), in total and per model."""
    project_id = f"{entity}/{project}"
    try:
        split_project_id(project_id)
    except ValueError as exc:
        raise NotFound(str(exc)) from exc
    authorize(caller, project_id)
    since, until = _utc(since, "since"), _utc(until, "until")
    async with app.engine.connect() as conn:
        return await project_spend(conn, project_id, since=since, until=until)


@router.get("/projects/{entity}/{project}/budget")
async def project_budget(entity: str, project: str, app: App, caller: Caller) -> dict[str, Any]:
    """The budgets over the project (its own and its team's), with this period's spend."""
    project_id = f"{entity}/{project}"
    return budgets_body(await app.admin.budget_status(caller, "project", project_id))


@router.put("/projects/{entity}/{project}/budget")
async def set_project_budget(
    entity: str, project: str, body: BudgetSpec, app: App, caller: Caller
) -> dict[str, Any]:
    """Set the project's budget (team owners, server admins)."""
    project_id = f"{entity}/{project}"
    await app.admin.set_budget(
        caller, "project", project_id, period=body.period, limit_usd=body.limit_usd, hard=body.hard
    )
    return budgets_body(await app.admin.budget_status(caller, "project", project_id))


@router.delete("/projects/{entity}/{project}/budget")
async def delete_project_budget(
    entity: str, project: str, app: App, caller: Caller
) -> dict[str, Any]:
    await app.admin.delete_budget(caller, "project", f"{entity}/{project}")
    return {"deleted": True}


def _utc(value: datetime | None, name: str) -> datetime | None:
    """A bound in UTC, as stored; one with no UTC form (0001-01-01T00:00+01:00) is a 422."""
    if value is None:
        return None
    try:
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    except OverflowError as exc:
        raise InvalidInput(["query", name], "timestamp out of range", value.isoformat()) from exc
