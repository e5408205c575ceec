"""The web gallery under /ui: server-rendered pages to sign in, browse, search and
generate, with a little progressive JavaScript. `install(app)` wires it into the app."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response

from imagegate.errors import ImagegateError, Unavailable
from imagegate.web import (
    account,
    auth,
    detail,
    edit,
    feedback,
    generate,
    images,
    pages,
    traces,
)
from imagegate.web.render import render
from imagegate.web.session import (
    SESSION_COOKIE,
    SignInRequired,
    clear_cookie,
    signin_url,
    web_context,
)
from imagegate.web.thumbs import ThumbnailCache

router = APIRouter(prefix="/ui", include_in_schema=False)
for module in (auth, pages, detail, feedback, traces, generate, edit, images, account):
    router.include_router(module.router)

# Resources a page embeds or fetches: they answer with a status, never a redirect.
_NOT_PAGES = ("/ui/img/", "/ui/thumb/", "/ui/static/")


def _is_page(request: Request) -> bool:
    """Whether a person is looking at the answer (else a script or an <img> asked)."""
    path = request.url.path
    if path.startswith(_NOT_PAGES) or path.endswith((".json", "/cards")):
        return False
    if request.method == "GET":
        return True
    accept = request.headers.get("accept", "")
    return "text/html" in accept and "application/json" not in accept


async def _sign_in_required(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SignInRequired)
    response: Response
    if _is_page(request):
        response = RedirectResponse(signin_url(exc.next_path), status_code=303)
    else:
        response = PlainTextResponse("sign in first", status_code=401)
    if exc.clear:
        clear_cookie(request, response, SESSION_COOKIE)
    return response


async def render_error(request: Request, exc: ImagegateError) -> Response:
    """Any ImagegateError under /ui, as the browser or the page's script wants it."""
    # A backend that is down: its reason is for the log, and no page needs it to render.
    unavailable = isinstance(exc, Unavailable)
    message = exc.public_message if isinstance(exc, Unavailable) else exc.message
    headers = exc.headers if unavailable else None
    if "application/json" in request.headers.get("accept", ""):
        return JSONResponse({"error": message}, status_code=exc.status_code, headers=headers)
    if unavailable or (not _is_page(request) and request.method == "GET"):  # image, fragment
        return PlainTextResponse(message, status_code=exc.status_code, headers=headers)
    ctx = await web_context(request)
    return render(ctx, "error.html", status_code=exc.status_code, status=exc.status_code,
                  message=message)  # fmt: skip


async def _root() -> Response:
    # A browser pointed at the server itself lands in the gallery.
    return RedirectResponse("/ui/", status_code=307)


def install(app: FastAPI) -> None:
    """Add the /ui pages to an app whose `state.imagegate` is set."""
    settings = app.state.imagegate.settings
    app.state.web_thumbnails = ThumbnailCache(
        settings.data_dir / "cache" / "thumbs", max_pixels=settings.max_image_pixels
    )
    app.include_router(router)
    app.add_api_route("/", _root, include_in_schema=False)
    # The links the Weave SDK prints lead to the Traces page.
    app.add_api_route(
        "/{entity}/{project}/r/call/{call_id}", traces.weave_call_link, include_in_schema=False
    )
    app.add_api_route(
        "/{entity}/{project}/weave", traces.weave_project_link, include_in_schema=False
    )
    app.add_exception_handler(SignInRequired, _sign_in_required)
    app.state.render_web_error = render_error  # used by errors.py's one handler
