"""The server admin's API: users, everyone's keys, the audit log (admins only)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from imagegate.api.deps import App, Caller
from imagegate.api.keys import key_body
from imagegate.errors import NotFound
from imagegate.store.accounts import Role

router = APIRouter(prefix="/admin", tags=["Admin"])


class NewUser(BaseModel):
    name: str
    is_admin: bool = False


class NewKeyFor(BaseModel):
    user: str
    entity: str | None = Field(default=None, description="defaults to the user's own entity")
    role: Role | None = Field(default=None, description="when the user joins the entity")
    is_admin: bool = Field(default=False, description="make the user a server admin")
    project: str | None = Field(
        default=None,
        description="default project (PROJECT or ENTITY/PROJECT in the key's entity) for "
        "requests that name none (the OpenAI door)",
    )


@router.get("/users")
async def list_users(app: App, caller: Caller) -> dict[str, Any]:
    return {
        "users": [
            {
                "name": u.name,
                "is_admin": u.is_admin,
                "created_at": u.created_at.isoformat(),
                "teams": u.teams,
            }
            for u in await app.admin.users(caller)
        ]
    }


@router.post("/users", status_code=201)
async def create_user(body: NewUser, app: App, caller: Caller) -> dict[str, Any]:
    await app.admin.create_user(caller, body.name, is_admin=body.is_admin)
    return {"name": body.name, "is_admin": body.is_admin}


@router.get("/keys")
async def list_keys(app: App, caller: Caller, user: str | None = None) -> dict[str, Any]:
    return {"keys": [key_body(k) for k in await app.admin.all_keys(caller, user)]}


@router.post("/keys", status_code=201)
async def create_key(body: NewKeyFor, app: App, caller: Caller) -> dict[str, Any]:
    """A key for any user; the user, the entity and the membership are made if missing."""
    key = await app.admin.create_key_for(
        caller, body.user, body.entity, body.role, is_admin=body.is_admin, project=body.project
    )
    return {"user": body.user, "entity": body.entity or body.user, "key": key}


@router.delete("/keys/{key_id}")
async def revoke_key(key_id: str, app: App, caller: Caller) -> dict[str, Any]:
    if not await app.admin.revoke_key(caller, key_id):
        raise NotFound("no active key with this id")
    return {"revoked": key_id}


@router.get("/audit")
async def audit_log(
    app: App,
    caller: Caller,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before: str | None = None,
) -> dict[str, Any]:
    """Admin actions, newest first; `before=<id>` pages back."""
    entries = await app.admin.audit_log(caller, limit, before)
    return {
        "entries": [
            {
                "id": e.id,
                "at": e.at.isoformat(),
                "actor": e.actor,
                "action": e.action,
                "target": e.target,
                "details": e.details,
            }
            for e in entries
        ]
    }
