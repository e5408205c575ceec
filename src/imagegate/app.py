"""The ASGI application: `create_app(settings)` wires routers, middleware and lifespan."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imagegate import __version__, metrics, web
from imagegate.api import (
    call_writes,
    calls,
    feedback,
    files,
    graphql,
    images,
    models,
    objects,
    projects,
    refs,
    server,
    tables,
    unserved,
)
from imagegate.config import Settings
from imagegate.core import Imagegate
from imagegate.errors import install_handlers
from imagegate.providers import Provider
from imagegate.recovery import Recovery
from imagegate.store import FileStore

UPLOAD_PATHS = frozenset({"/file/create", "/files/create"})
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


class RequestGuard:
    """Request fix-ups that must happen before routing.

    - Bodies over the limit get 413 as soon as that is known (from Content-Length, or
      while streaming a chunked body), and are never buffered whole.
    - API endpoints read the body as JSON when Content-Type is missing (some Weave
      client paths send it that way) or is curl's `-d` default, form-urlencoded. The
      web pages under /ui post real HTML forms and are left alone.
    """

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        upload = scope["path"] in UPLOAD_PATHS
        limit = self.settings.max_upload_bytes if upload else self.settings.max_request_bytes
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _too_large(send, limit)
            return
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        api_json = not upload and not scope["path"].startswith("/ui")  # /ui posts real forms
        if api_json and content_type in (b"", b"application/x-www-form-urlencoded"):
            scope = {
                **scope,
                "headers": [(k, v) for k, v in scope["headers"] if k != b"content-type"]
                + [(b"content-type", b"application/json")],
            }

        received = 0
        rejected = False

        async def limited_receive() -> Message:
            nonlocal received, rejected
            if rejected:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # Answer now and tell the app the client is gone, so it stops reading.
                    rejected = True
                    await _too_large(send, limit)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not rejected:  # after a 413 the app's own answer has nowhere to go
                await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not rejected:
                raise


async def _too_large(send: Send, limit: int) -> None:
    body = json.dumps({"detail": f"request body is larger than the limit of {limit} bytes"})
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
        }
    )
    await send({"type": "http.response.body", "body": body.encode()})


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
    for module in (images, calls, call_writes, objects, tables, refs, feedback, files):
        app.include_router(module.router)
    for module in (models, projects, server, graphql):
        app.include_router(module.router)
    unserved.install(app)  # after the routers: only what none of them serves
    web.install(app)  # the browser gallery under /ui
    app.add_middleware(RequestGuard, settings=settings)
    app.add_middleware(TracesAlias)  # outside the guard: it sees the real path
    metrics.install(app, imagegate.metrics)  # outermost: counts the guard's 413s too
    return app


def app_from_env() -> Any:
    """Factory for `uvicorn --factory imagegate.app:app_from_env`."""
    return create_app(Settings.from_env())
