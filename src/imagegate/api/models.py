"""GET /models: what this server can generate with, and each model's options."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from imagegate.api.deps import App, Caller

router = APIRouter(tags=["Models"])


@router.get("/models")
async def list_models(app: App, caller: Caller) -> dict[str, Any]:
    """Every model this server can serve; `credentials` says whether it can be used now
    (it needs no key, or the server or one of your teams has set it)."""
    servable = set(app.providers)
    usable = set(await app.generation.usable_models(sorted(caller.entities)))
    return {
        "models": [
            {**spec.describe(), "credentials": name in usable}
            for name in app.catalog.names
            if (spec := app.catalog.models[name]).provider in servable
        ]
    }
