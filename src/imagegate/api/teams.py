"""Teams (entities), their members with roles, provider keys and budgets."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from imagegate.api.deps import App, Caller
from imagegate.errors import NotFound
from imagegate.store.accounts import Role
from imagegate.store.budgets import BudgetStatus, Period, budget_body

router = APIRouter(tags=["Teams"])


class NewTeam(BaseModel):
    name: str


class Membership(BaseModel):
    role: Role


class SecretValue(BaseModel):
    value: str = Field(min_length=1)


class BudgetSpec(BaseModel):
    period: Period
    limit_usd: float = Field(ge=0)
    hard: bool = Field(True, description="refuse over the limit (else only warn)")


def budgets_body(statuses: list[BudgetStatus]) -> dict[str, Any]:
    return {
        "budgets": [
            budget_body(s.budget, s.window_start, s.spent_usd, s.reserved_usd) for s in statuses
        ],
        "currency": "USD",
    }


@router.get("/teams")
async def list_teams(app: App, caller: Caller) -> dict[str, Any]:
    """Your teams (a server admin: every team)."""
    teams = await app.admin.visible_teams(caller)
    return {
        "teams": [
            {"name": name, "members": count, "role": caller.roles.get(name)}
            for name, count in teams
        ]
    }


@router.post("/teams", status_code=201)
async def create_team(body: NewTeam, app: App, caller: Caller) -> dict[str, Any]:
    """A new team (server admins)."""
    await app.admin.create_team(caller, body.name)
    return {"name": body.name}


@router.get("/teams/{entity}/members")
async def list_members(entity: str, app: App, caller: Caller) -> dict[str, Any]:
    members = await app.admin.members(caller, entity)
    return {
        "members": [{"user": m.user, "role": m.role, "since": m.since.isoformat()} for m in members]
    }


@router.put("/teams/{entity}/members/{user}")
async def set_member(
    entity: str, user: str, body: Membership, app: App, caller: Caller
) -> dict[str, Any]:
    """Add a user to the team or change their role (team owners, server admins)."""
    await app.admin.set_member(caller, entity, user, body.role)
    return {"user": user, "role": body.role}


@router.delete("/teams/{entity}/members/{user}")
async def remove_member(entity: str, user: str, app: App, caller: Caller) -> dict[str, Any]:
    await app.admin.remove_member(caller, entity, user)
    return {"removed": user}


@router.get("/teams/{entity}/secrets")
async def list_secrets(entity: str, app: App, caller: Caller) -> dict[str, Any]:
    """The names of the team's provider keys (values are never shown)."""
    names = await app.admin.secret_names(caller, entity)
    return {
        "secrets": [{"name": name, "updated_at": updated.isoformat()} for name, updated in names]
    }


@router.put("/teams/{entity}/secrets/{name}")
async def set_secret(
    entity: str, name: str, body: SecretValue, app: App, caller: Caller
) -> dict[str, Any]:
    await app.admin.set_secret(caller, entity, name, body.value)
    return {"name": name}


@router.delete("/teams/{entity}/secrets/{name}")
async def delete_secret(entity: str, name: str, app: App, caller: Caller) -> dict[str, Any]:
    if not await app.admin.delete_secret(caller, entity, name):
        raise NotFound(f"team {entity!r} has no secret {name}")
    return {"deleted": name}


@router.get("/teams/{entity}/budget")
async def team_budget(entity: str, app: App, caller: Caller) -> dict[str, Any]:
    return budgets_body(await app.admin.budget_status(caller, "entity", entity))


@router.put("/teams/{entity}/budget")
async def set_team_budget(
    entity: str, body: BudgetSpec, app: App, caller: Caller
) -> dict[str, Any]:
    """Set the team's budget, over all its projects (team owners, server admins)."""
    await app.admin.set_budget(
        caller, "entity", entity, period=body.period, limit_usd=body.limit_usd, hard=body.hard
    )
    return budgets_body(await app.admin.budget_status(caller, "entity", entity))


@router.delete("/teams/{entity}/budget")
async def delete_team_budget(entity: str, app: App, caller: Caller) -> dict[str, Any]:
    await app.admin.delete_budget(caller, "entity", entity)
    return {"deleted": True}
