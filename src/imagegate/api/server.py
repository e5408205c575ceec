"""Server metadata and probes: /server_info, /health (alive) and /ready (can serve)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from imagegate import __version__
from imagegate.api.deps import App, Caller
from imagegate.schemas import HealthRes, ServerInfoRes
from imagegate.store.db import ping

router = APIRouter(tags=["Service"])
log = logging.getLogger("imagegate.ready")

READY_TIMEOUT = 3.0  # seconds per check: a load balancer's probe must not hang

# The oldest Weave client this server has been tested with.
MIN_WEAVE_VERSION = "0.52.0"


@router.get("/server_info", response_model=ServerInfoRes)
async def server_info(_caller: Caller) -> dict[str, Any]:
    return {
        "min_required_weave_python_version": MIN_WEAVE_VERSION,
        "trace_server_version": __version__,
    }


@router.get("/health", response_model=HealthRes)
async def health() -> dict[str, Any]:
    return {"status": "ok"}


@router.get(
    "/ready",
    responses={503: {"description": "The database or the file store cannot be reached"}},
)
async def ready(app: App) -> JSONResponse:
    """Whether this replica can serve: its database and file store both answer."""
    database, files = await asyncio.gather(_check(ping(app.engine)), _check(app.files.ping()))
    if database == files == "ok":
        return JSONResponse({"status": "ready"})
    return JSONResponse(
        {"status": "unavailable", "database": database, "files": files},
        status_code=503,
        headers={"Retry-After": "5"},
    )


async def _check(probe: Awaitable[None]) -> str:
    try:
        await asyncio.wait_for(probe, READY_TIMEOUT)
    except Exception as exc:  # any failure means "not ready"; the reason goes to the log
        log.warning("readiness check failed: %r", exc)
        return "unavailable"
    return "ok"
