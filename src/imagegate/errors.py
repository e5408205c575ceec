"""Errors the service raises on purpose, and how each becomes an HTTP answer."""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

log = logging.getLogger("imagegate.errors")

# How long a client should wait before retrying a 409 or 503.
RETRY_AFTER_SECONDS = 2
# Requests under this path speak OpenAI's API, errors included (the OpenAI door).
OPENAI_PREFIX = "/v1/"


class ImagegateError(Exception):
    status_code = 500
    headers: ClassVar[dict[str, str] | None] = None
    # OpenAI's error `code` for this error at the OpenAI door.
    openai_code: ClassVar[str | None] = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def body(self) -> dict[str, Any]:
        return {"detail": self.message}


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
    openai_code = "invalid_api_key"


class Forbidden(ImagegateError):
    status_code = 403
    openai_code = "permission_denied"


class NotFound(ImagegateError):
    status_code = 404


class Conflict(ImagegateError):
    """The same request is still being worked on elsewhere: retry later."""

    status_code = 409
    headers: ClassVar[dict[str, str] | None] = {"Retry-After": str(RETRY_AFTER_SECONDS)}


class DatabaseUnavailable(ImagegateError):
    """The database cannot be reached (the log gets the reason; the caller, a 503)."""

    status_code = 503
    headers: ClassVar[dict[str, str] | None] = {"Retry-After": str(RETRY_AFTER_SECONDS)}

    def body(self) -> dict[str, Any]:
        return {"detail": "database unavailable"}


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
    return openai_error(status, exc.message, code=exc.openai_code, headers=exc.headers)


class StorageUnavailable(ImagegateError):
    """Files a request brings (an edit's images) could not be stored: nothing was
    recorded or paid, and the client may retry."""

    status_code = 503
    headers: ClassVar[dict[str, str] | None] = {"Retry-After": str(RETRY_AFTER_SECONDS)}
    openai_code = "storage_unavailable"


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(ImagegateError)
    async def _handle(request: Request, exc: ImagegateError) -> JSONResponse:
        if request.url.path.startswith(OPENAI_PREFIX):
            return _as_openai(exc)
        headers = (
            {"WWW-Authenticate": 'Basic realm="imagegate"'} if exc.status_code == 401 else None
        )
        return JSONResponse(exc.body(), status_code=exc.status_code, headers=headers or exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        if not request.url.path.startswith(OPENAI_PREFIX):
            return await request_validation_exception_handler(request, exc)
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
