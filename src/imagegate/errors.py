"""Errors the service raises on purpose, and how each becomes an HTTP answer."""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

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


class NotImplementedByServer(ImagegateError):
    status_code = 501


class DatabaseUnavailable(ImagegateError):
    """The database cannot be reached (the log gets the reason; the caller, a 503)."""

    status_code = 503
    headers: ClassVar[dict[str, str] | None] = {"Retry-After": str(RETRY_AFTER_SECONDS)}

    def body(self) -> dict[str, Any]:
        return {"detail": "database unavailable"}


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(ImagegateError)
    async def _handle(_request: Request, exc: ImagegateError) -> JSONResponse:
        headers = (
            {"WWW-Authenticate": 'Basic realm="imagegate"'} if exc.status_code == 401 else None
        )
        return JSONResponse(exc.body(), status_code=exc.status_code, headers=headers or exc.headers)

    # A lost connection, a pool that cannot hand one out, SQLite "database is locked":
    # a prompt 503 the client can retry, not a 500 or a hang.
    @app.exception_handler(sqlalchemy.exc.OperationalError)
    @app.exception_handler(sqlalchemy.exc.InterfaceError)
    @app.exception_handler(sqlalchemy.exc.TimeoutError)
    async def _database_down(_request: Request, exc: Exception) -> JSONResponse:
        log.warning("database unavailable: %s", exc)
        return await _handle(_request, DatabaseUnavailable(str(exc)))

    # PostgreSQL refuses values SQLite takes (a NUL character, an unpaired surrogate, a
    # number out of range): a data exception, SQLSTATE class 22, is the request's fault.
    @app.exception_handler(sqlalchemy.exc.DBAPIError)
    async def _bad_value(_request: Request, exc: Exception) -> JSONResponse:
        if not str(getattr(getattr(exc, "orig", None), "sqlstate", "") or "").startswith("22"):
            raise exc
        log.info("value refused by the database: %s", exc)
        message = "a value in the request cannot be stored or searched for (e.g. a NUL character)"
        return await _handle(_request, BadRequest(message))
