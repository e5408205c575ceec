"""The ASGI application: `create_app(settings)` wires routers, middleware and lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from imagegate import __version__, metrics, web
from imagegate.api import calls, files, images, models, projects, server
from imagegate.config import Settings
from imagegate.core import Imagegate
from imagegate.errors import install_handlers
from imagegate.guard import RequestGuard
from imagegate.providers import Provider
from imagegate.recovery import Recovery
from imagegate.store import FileStore


def create_app(
    settings: Settings | None = None,
    *,
    providers: dict[str, Provider] | None = None,
    file_store: FileStore | None = None,
) -> FastAPI:
    settings = settings or Settings.from_env()
    imagegate = Imagegate(settings, providers=providers, files=file_store)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await imagegate.start()
        # Calls a crash left unfinished read as failed before any request is served.
        recovery = Recovery(imagegate)
        await recovery.start()
        try:
            yield
        finally:
            await recovery.stop()
            await imagegate.close()

    app = FastAPI(
        title="imagegate",
        version=__version__,
        description="Self-hosted image generation with the Weave trace-server API.",
        lifespan=lifespan,
    )
    app.state.imagegate = imagegate
    install_handlers(app)
    for module in (images, calls, files, models, projects, server):
        app.include_router(module.router)
    web.install(app)  # the browser gallery under /ui
    app.add_middleware(RequestGuard, settings=settings)
    metrics.install(app, imagegate.metrics)  # outermost: counts the guard's 413s too
    return app


def app_from_env() -> Any:
    """Factory for `uvicorn --factory imagegate.app:app_from_env`."""
    return create_app(Settings.from_env())
