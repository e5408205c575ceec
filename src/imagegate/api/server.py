"""Server metadata: /server_info and /health."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from imagegate import __version__
from imagegate.api.deps import Caller
from imagegate.schemas import HealthRes, ServerInfoRes

router = APIRouter(tags=["Service"])

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
