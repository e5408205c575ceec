"""Errors the service raises on purpose, and how each becomes an HTTP answer.

One tree: every error a request can end with is an ImagegateError, whose status code
and body the API renders as JSON and the web gallery (under /ui) as a page. Foreign
errors are mapped where they enter: a failed disk or object-store request becomes a
StorageError (store/files.py, store/objectstore.py), a database that cannot be reached
DatabaseUnavailable (store/db.py and the SQLAlchemy handlers below).
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("imagegate.errors")

# How long a client should wait before retrying a 409 or 503.
RETRY_AFTER_SECONDS = 2
# Requests under this path speak OpenAI's API, errors included (the OpenAI door).
OPENAI_PREFIX = "/v1/"


class ImagegateError(Exception):
    status_code = 500
    headers: ClassVar[dict[str, str] | None] = None
    # A machine-readable name for errors a client acts on (the OpenAI door's `code`).
    code: str | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def body(self) -> dict[str, Any]:
        return {"detail": self.message}

    def response_headers(self) -> dict[str, str] | None:
        return self.headers


class InvalidInput(ImagegateError):
    """A request field with a value the model or server cannot take (422, like pydantic's)."""

    status_code = 422

    def __init__(
        self, loc: list[str | int], message: str, value: Any = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.loc = loc
        self.value = value
        self.code = code  # machine-readable, e.g. "model_not_found"

    def body(self) -> dict[str, Any]:
        item = {"loc": self.loc, "msg": self.message, "type": "value_error"}
        if self.value is not None:
            item["input"] = self.value
        return {"detail": [item]}


class BadRequest(ImagegateError):
    status_code = 400


class Unauthorized(ImagegateError):
    status_code = 401
    code = "invalid_api_key"


class Forbidden(ImagegateError):
    status_code = 403
    code = "permission_denied"


class NotFound(ImagegateError):
    status_code = 404


class Conflict(ImagegateError):
    """The same request is still being worked on elsewhere: retry later."""

    status_code = 409
    headers: ClassVar[dict[str, str] | None] = {"Retry-After": str(RETRY_AFTER_SECONDS)}


class DigestMismatch(ImagegateError):
    """The client's `expected_digest` is not the digest of what it sent (Weave's 409)."""

    status_code = 409

    def __init__(self, computed: str, expected: str) -> None:
        super().__init__(f"digest mismatch: expected {expected}, computed {computed}")


class Deleted(NotFound):
    """Something that existed and was deleted: a 404 whose body says when, which tells
    the Weave client not to retry."""

    def __init__(self, message: str, deleted_at: str) -> None:
        super().__init__(message)
        self.deleted_at = deleted_at

    def body(self) -> dict[str, Any]:
        return {"detail": self.message, "deleted_at": self.deleted_at}


class TooManyRequests(ImagegateError):
    """The caller already has as much work running as it may: retry later."""

    status_code = 429
    headers: ClassVar[dict[str, str] | None] = {"Retry-After": str(RETRY_AFTER_SECONDS)}


class Unavailable(ImagegateError):
    """A backing service cannot be used right now (the log gets the reason; the caller,
    a 503 to retry)."""

    status_code = 503
    headers: ClassVar[dict[str, str] | None] = {"Retry-After": str(RETRY_AFTER_SECONDS)}
    public_message = "service unavailable"

    def body(self) -> dict[str, Any]:
        return {"detail": self.public_message}


class DatabaseUnavailable(Unavailable):
    public_message = "database unavailable"


class StorageError(Unavailable):
    """The file store failed a read or write (a disk error, an object-store request)."""

    public_message = "file storage unavailable"
    code = "storage_unavailable"


def auth_challenge(user_agent: str, browser_fetch: bool) -> str:
    """The 401 challenge. Never Basic to a browser: it would offer to remember the
    credentials and then send them on its own, to any site's requests (CSRF). API
    clients (curl, SDKs, the Weave client) send credentials up front and are not browsers."""
    browser = browser_fetch or "mozilla/" in user_agent.lower()
    return 'Bearer realm="imagegate"' if browser else 'Basic realm="imagegate"'


# What SQLite and PostgreSQL say about a statement too large or deep to run: the
# request's fault, not the database's health.
TOO_COMPLEX = (
    "Expression tree is too large",
    "too many SQL variables",
    "too many terms in compound SELECT",
    "stack depth limit exceeded",
    "parser stack overflow",
)


def short_reason(exc: Exception) -> str:
    """The driver's own message, without the SQL statement (which can be megabytes)."""
    reason = str(getattr(exc, "orig", None) or exc)
    return reason if len(reason) <= 300 else reason[:300] + "…"


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
    # An outage's reason goes to the log, never to the client.
    message = exc.public_message if isinstance(exc, Unavailable) else exc.message
    return openai_error(status, message, code=exc.code, headers=exc.response_headers())


class StorageUnavailable(StorageError):
    """Files a request brings (an edit's images) could not be stored: nothing was
    recorded or paid, and the client may retry."""


class BudgetExceeded(ImagegateError):
    """A hard budget cannot take a generation's estimated cost: refused before any
    provider call, nothing stored. 402, body `{"detail", "error_type": "budget_exceeded",
    "budget": {...}}`."""

    status_code = 402
    code = "budget_exceeded"

    def __init__(self, message: str, budget: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.budget = budget

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"detail": self.message, "error_type": self.code}
        if self.budget is not None:
            body["budget"] = self.budget
        return body


class RateLimited(ImagegateError):
    """A key or project used up its requests or images for this minute: 429 with
    Retry-After (seconds to the next window), body `{"detail", "error_type":
    "rate_limited", "limit": {...}}`."""

    status_code = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after: int, limit: dict[str, Any]) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.limit = limit

    def body(self) -> dict[str, Any]:
        return {"detail": self.message, "error_type": self.code, "limit": self.limit}

    def response_headers(self) -> dict[str, str] | None:
        return {"Retry-After": str(self.retry_after)}


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
        if exc.status_code == 405:
            allowed = (exc.headers or {}).get("Allow", "")
            message = f"{request.method} is not allowed on {request.url.path}"
            if allowed:
                message += f": use {allowed}"
            if allowed == "POST":
                message += " with a JSON body"
            return JSONResponse({"detail": message}, status_code=405, headers=exc.headers)
        return await http_exception_handler(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        if not request.url.path.startswith(OPENAI_PREFIX):
            return JSONResponse({"detail": readable_errors(exc.errors())}, status_code=422)
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(part) for part in first.get("loc", ()) if part != "body"]
        where = f"{'.'.join(loc)}: " if loc else ""
        message = f"{where}{first.get('msg', 'invalid request')}"
        return openai_error(400, message, param=loc[0] if loc else None, code="invalid_value")

    # A lost connection, a pool that cannot hand one out, SQLite "database is locked":
    # a prompt 503 the client can retry, not a 500 or a hang.
    @app.exception_handler(sqlalchemy.exc.OperationalError)
    @app.exception_handler(sqlalchemy.exc.InterfaceError)
    @app.exception_handler(sqlalchemy.exc.TimeoutError)
    async def _database_down(_request: Request, exc: Exception) -> Response:
        reason = short_reason(exc)
        if any(sign in reason for sign in TOO_COMPLEX):
            log.info("query refused by the database: %s", reason)
            return await _handle(_request, BadRequest("the query is too complex for the database"))
        return await _handle(_request, DatabaseUnavailable(reason))

    # PostgreSQL refuses values SQLite takes (a NUL character, an unpaired surrogate, a
    # number out of range): a data exception, SQLSTATE class 22, is the request's fault.
    @app.exception_handler(sqlalchemy.exc.DBAPIError)
    async def _bad_value(_request: Request, exc: Exception) -> Response:
        if not str(getattr(getattr(exc, "orig", None), "sqlstate", "") or "").startswith("22"):
            raise exc
        log.info("value refused by the database: %s", short_reason(exc))
        message = "a value in the request cannot be stored or searched for (e.g. a NUL character)"
        return await _handle(_request, BadRequest(message))


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
