"""Errors the service raises on purpose, and how each becomes an HTTP answer."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse


class ImagegateError(Exception):
    status_code = 500

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


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(ImagegateError)
    async def _handle(_request: Request, exc: ImagegateError) -> JSONResponse:
        headers = (
            {"WWW-Authenticate": 'Basic realm="imagegate"'} if exc.status_code == 401 else None
        )
        return JSONResponse(exc.body(), status_code=exc.status_code, headers=headers)
