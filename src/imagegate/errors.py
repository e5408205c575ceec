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
from fastapi.responses import JSONResponse, Response

log = logging.getLogger("imagegate.errors")

# How long a client should wait before retrying a 409 or 503.
RETRY_AFTER_SECONDS = 2


class ImagegateError(Exception):
    status_code = 500
    headers: ClassVar[dict[str, str] | None] = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def body(self) -> dict[str, Any]:
        return {"detail": self.message}


class InvalidInput(ImagegateError):
    """A request field with a value the model or server cannot take (422, like pydantic's)."""

    status_code = 422

    def __init__(self, loc: list[str | int], message: str, value: Any = None) -> None:
        super().__init__(message)
        self.loc = loc
        self.value = value

    def body(self) -> dict[str, Any]:
        item = {"loc": self.loc, "msg": self.message, "type": "value_error"}
        if self.value is not None:
            item["input"] = self.value
        return {"detail": [item]}


class BadRequest(ImagegateError):
    status_code = 400


class Unauthorized(ImagegateError):
    status_code = 401


class Forbidden(ImagegateError):
    status_code = 403


class NotFound(ImagegateError):
    status_code = 404


class Conflict(ImagegateError):
    """The same request is still being worked on elsewhere: retry later."""

    status_code = 409
    headers: ClassVar[dict[str, str] | None] = {"Retry-After": str(RETRY_AFTER_SECONDS)}


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


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(ImagegateError)
    async def _handle(request: Request, exc: ImagegateError) -> Response:
        if isinstance(exc, Unavailable):
            log.warning("%s: %s", exc.public_message, short_reason(exc))
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
        return JSONResponse(exc.body(), status_code=exc.status_code, headers=headers or exc.headers)

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
