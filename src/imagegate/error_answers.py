"""How an error of the tree (imagegate.errors) becomes an HTTP answer: JSON for the API,
OpenAI's envelope under /v1 (the OpenAI door), a page under /ui (the web gallery renders
it, web/__init__.py). One handler serves every ImagegateError; SQLAlchemy's errors and
the framework's own (404/405, validation) are answered the same way."""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from imagegate.errors import (
    ImagegateError,
    InvalidInput,
    RouteError,
    Unavailable,
    database_error,
    short_reason,
)

log = logging.getLogger("imagegate.errors")

# Requests under this path speak OpenAI's API, errors included (the OpenAI door).
OPENAI_PREFIX = "/v1/"


def auth_challenge(user_agent: str, browser_fetch: bool) -> str:
    """The 401 challenge. Never Basic to a browser: it would offer to remember the
    credentials and then send them on its own, to any site's requests (CSRF). API
    clients (curl, SDKs, the Weave client) send credentials up front and are not browsers."""
    browser = browser_fetch or "mozilla/" in user_agent.lower()
    return 'Bearer realm="imagegate"' if browser else 'Basic realm="imagegate"'


def openai_error(
    status: int,
    message: str,
    *,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """An answer in OpenAI's error envelope, so OpenAI's SDKs raise their own types."""
    kind = "server_error" if status >= 500 else "invalid_request_error"
    error = {"message": message, "type": kind, "param": param, "code": code, **extra}
    return JSONResponse({"error": error}, status_code=status, headers=headers)


def _as_openai(exc: ImagegateError) -> JSONResponse:
    if isinstance(exc, InvalidInput):
        # The OpenAI door's inputs are top-level fields: the param is the last loc part.
        param = str(exc.loc[-1]) if len(exc.loc) > 1 else None
        status = 404 if exc.code == "model_not_found" else 400
        code = exc.code or "invalid_value"
        return openai_error(status, exc.message, param=param, code=code)
    status = 400 if exc.status_code == 422 else exc.status_code
    return openai_error(status, exc.client_message, code=exc.code, headers=exc.response_headers())


def route_error(request: Request, exc: StarletteHTTPException) -> RouteError:
    """The framework's refusal as an error of the tree, with a message that says what to
    do: Weave's API keeps FastAPI's "Not Found", the OpenAI door says what OpenAI does,
    the gallery names the page it does not have."""
    method, path = request.method, request.url.path
    if exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        message = f"{method} is not allowed on {path}"
        if allowed:
            message += f": use {allowed}"
        if allowed == "POST":
            message += " with a JSON body"
    elif exc.status_code == 404 and path.startswith(OPENAI_PREFIX):
        message = f"Invalid URL ({method} {path})"
    elif exc.status_code == 404 and path.startswith("/ui/"):
        message = f"There is no page at {path}."
    else:
        message = str(exc.detail)
    return RouteError(message, exc.status_code, exc.headers)


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(ImagegateError)
    async def _handle(request: Request, exc: ImagegateError) -> Response:
        if isinstance(exc, Unavailable):
            log.warning("%s: %s", exc.public_message, short_reason(exc))
        if request.url.path.startswith(OPENAI_PREFIX):
            return _as_openai(exc)
        web_renderer = getattr(request.app.state, "render_web_error", None)
        if web_renderer is not None and request.url.path.startswith("/ui"):
            response: Response = await web_renderer(request, exc)
            return response
        headers = (
            {
                "WWW-Authenticate": auth_challenge(
                    request.headers.get("user-agent", ""), "sec-fetch-mode" in request.headers
                )
            }
            if exc.status_code == 401
            else None
        )
        return JSONResponse(
            exc.body(), status_code=exc.status_code, headers=headers or exc.response_headers()
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        # The framework's own 404s and 405s enter the tree here: each door answers them
        # as it answers any error (OpenAI's envelope under /v1, a page under /ui).
        return await _handle(request, route_error(request, exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        if not request.url.path.startswith(OPENAI_PREFIX):
            return JSONResponse({"detail": readable_errors(exc.errors())}, status_code=422)
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(part) for part in first.get("loc", ()) if part != "body"]
        where = f"{'.'.join(loc)}: " if loc else ""
        message = f"{where}{first.get('msg', 'invalid request')}"
        return openai_error(400, message, param=loc[0] if loc else None, code="invalid_value")

    @app.exception_handler(sqlalchemy.exc.DBAPIError)
    @app.exception_handler(sqlalchemy.exc.TimeoutError)
    async def _database(request: Request, exc: Exception) -> Response:
        mapped = database_error(exc)
        if mapped is None:
            raise exc  # a bug: a 500, with its traceback in the log
        return await _handle(request, mapped)


def readable_errors(errors: Any) -> list[dict[str, Any]]:
    """pydantic's errors, said plainly: a body that is not JSON says so (without the
    empty `input` pydantic reports for it), and our own validators' messages lose
    pydantic's "Value error, " prefix."""
    result = []
    for error in errors:
        item = dict(error)
        if item.get("type") == "json_invalid":
            reason = (item.get("ctx") or {}).get("error", "")
            item["msg"] = "the body must be JSON" + (f" ({reason})" if reason else "")
            item.pop("input", None)
            item.pop("ctx", None)
        elif item.get("type") == "value_error":
            item["msg"] = str(item.get("msg", "")).removeprefix("Value error, ")
            item.pop("ctx", None)
        result.append(item)
    return jsonable_encoder(result)
