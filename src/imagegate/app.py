"""The ASGI application: `create_app(settings)` wires routers, middleware and lifespan."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from imagegate import __version__, docs, metrics, web
from imagegate.api import (
    admin,
    call_writes,
    calls,
    feedback,
    files,
    graphql,
    images,
    keys,
    models,
    objects,
    openai_images,
    projects,
    refs,
    server,
    tables,
    teams,
    unserved,
)
from imagegate.config import Settings
from imagegate.core import Imagegate
from imagegate.error_answers import install_handlers
from imagegate.guard import RequestGuard
from imagegate.lazy import preload
from imagegate.providers import Provider
from imagegate.recovery import Recovery
from imagegate.startup import Prepared, ServerLock
from imagegate.store import FileStore

TRACES_PREFIX = "/traces"


class TracesAlias:
    """Serve the whole trace API under /traces too, where `weave.init` puts it
    (WANDB_BASE_URL + "/traces"): the path is rewritten before routing, so every route,
    the request guard and the 501s behave the same on both paths."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and path.startswith(TRACES_PREFIX + "/"):
            inner = path[len(TRACES_PREFIX) :]
            if not inner.startswith("/ui"):  # the gallery lives at /ui only
                scope = {**scope, "path": inner, "raw_path": inner.encode()}
        await self.app(scope, receive, send)


def create_app(
    settings: Settings | None = None,
    *,
    providers: dict[str, Provider] | None = None,
    file_store: FileStore | None = None,
    prepared: Prepared | None = None,
) -> FastAPI:
    """The app. Unless `prepared` (a worker of `imagegate serve`, whose supervising
    process ran imagegate.startup.prepare once for all workers), its start-up migrates
    and recovers after a crash itself."""
    settings = settings or Settings.from_env()
    imagegate = Imagegate(settings, providers=providers, files=file_store)
    if prepared is not None and prepared.interrupted:
        imagegate.metrics.interrupted(prepared.interrupted)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        lock = ServerLock.for_url(settings.resolved_database_url)
        recovery = Recovery(imagegate)
        try:
            if prepared is None:
                with lock.preparing():
                    await imagegate.start()
                    # Calls a crash left unfinished read as failed before any request.
                    await recovery.at_start(alone=lock.claim())
            await recovery.start()
            # What start-up left out (imagegate.lazy), loaded while already serving.
            loading = preload("openai", "cryptography.fernet")
            loading.add_done_callback(_settle_heap)
            yield
        finally:
            await recovery.stop()
            await imagegate.close()
            lock.release()

    app = FastAPI(
        title="imagegate",
        version=__version__,
        description="Self-hosted image generation with the Weave trace-server API.",
        lifespan=lifespan,
        docs_url=None,  # served by imagegate.docs, from local files
        redoc_url=None,
    )
    app.state.imagegate = imagegate
    install_handlers(app)
    for module in (images, openai_images, calls, call_writes, objects, tables, refs, feedback):
        app.include_router(module.router)
    for module in (files, models, projects, keys, teams, admin, server, graphql):
        app.include_router(module.router)
    unserved.install(app)  # after the routers: only what none of them serves
    web.install(app)  # the browser gallery under /ui
    docs.install(app)
    app.add_middleware(RequestGuard, settings=settings)
    app.add_middleware(TracesAlias)  # outside the guard: it sees the real path
    # Outermost: counts the guard's 413s too.
    metrics.install(app, imagegate.metrics, settings.metrics_token)
    return app


def _settle_heap(_loaded: object) -> None:
    """Everything loaded so far (modules, the app, the catalog) lives as long as the
    process: moved out of the collector's sight, so a full collection walks only what
    requests made (gc.freeze)."""
    gc.freeze()


def app_from_env() -> Any:
    """Factory for `uvicorn --factory imagegate.app:app_from_env`."""
    return create_app(Settings.from_env())
