"""A user's own API keys: GET/POST /keys, DELETE /keys/{key_id}."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from imagegate.api.deps import App, Caller
from imagegate.store.accounts import KeyInfo

router = APIRouter(tags=["Keys"])


def key_body(key: KeyInfo) -> dict[str, Any]:
    return {
        "id": key.id,
        "user": key.user,
        "prefix": key.prefix,
        "entities": list(key.entities),
        "default_project": key.default_project,
        "created_at": key.created_at.isoformat(),
        "revoked_at": key.revoked_at.isoformat() if key.revoked_at else None,
    }


@router.get("/keys")
async def my_keys(app: App, caller: Caller) -> dict[str, Any]:
    """Your keys (prefixes only: a key is shown once, when made)."""
    return {"keys": [key_body(k) for k in await app.admin.own_keys(caller)]}


@router.post("/keys", status_code=201)
async def create_my_key(app: App, caller: Caller) -> dict[str, Any]:
    """A new key for you. `key` is in this answer only: it is stored as a hash."""
    new = await app.admin.create_own_key(caller)
    return {"id": new.id, "key": new.key, "prefix": new.prefix}


@router.delete("/keys/{key_id}")
async def revoke_my_key(key_id: str, app: App, caller: Caller) -> dict[str, Any]:
    """Revoke one of your keys (it stops working at once, web sessions included)."""
    await app.admin.revoke_own_key(caller, key_id)
    return {"revoked": key_id}
