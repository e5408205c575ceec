"""`/docs` that works offline: Swagger UI 5 (it renders OpenAPI 3.1, which FastAPI
writes; 4.x cannot) served from the `fastapi-offline` package's files, favicon included,
so the page loads nothing from outside this server. (No `/redoc`: ReDoc's bundle loads
its logo from a CDN.)"""

from __future__ import annotations

from importlib import resources

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response

ASSETS = "/docs/assets"
_TYPES = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon.png": "image/png",
}


def install(app: FastAPI) -> None:
    """Serve the docs page and its assets. The app is made with docs_url=None and
    redoc_url=None, so FastAPI's own CDN-linked pages are never served."""
    root = resources.files("fastapi_offline").joinpath("static")
    assets = {name: root.joinpath(name).read_bytes() for name in _TYPES}
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} API",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon.png",
            # No badge from the public validator service: nothing leaves this server.
            swagger_ui_parameters={"validatorUrl": None},
        )

    @app.get(ASSETS + "/{name}", include_in_schema=False)
    async def asset(name: str) -> Response:
        if name not in assets:
            return Response("not found", status_code=404, media_type="text/plain")
        return Response(
            assets[name],
            media_type=_TYPES[name],
            headers={"Cache-Control": "public, max-age=86400"},
        )
