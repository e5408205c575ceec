"""GET /models: what this server can generate with, and each model's options."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from imagegate.api.deps import App, Caller

router = APIRouter(tags=["Models"])


@router.get("/models")
async def list_models(app: App, _caller: Caller) -> dict[str, Any]:
    servable = set(app.providers)
    return {
        "models": [
            spec.describe()
            for name in app.catalog.names
            if (spec := app.catalog.models[name]).provider in servable
        ]
    }
