"""What every router needs: the app's services and the authenticated caller."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPBasic

from imagegate.core import Imagegate
from imagegate.errors import NotFound, Unauthorized
from imagegate.names import split_project_id
from imagegate.store import Principal
from imagegate.store.accounts import authorize

__all__ = ["App", "Caller", "authorize", "current_principal", "get_imagegate", "project_from_path"]


class _DeclaredBasic(HTTPBasic):
    """HTTP Basic as the OpenAPI document declares it (the Weave spec names `HTTPBasic`).

    It parses nothing itself: `current_principal` reads the header, so Bearer keys
    (sent by newer Weave clients) work too and every failure gets the same 401.
    """

    async def __call__(self, request: Request) -> None:  # type: ignore[override]
        return None


basic_scheme = _DeclaredBasic(scheme_name="HTTPBasic", auto_error=False)


def get_imagegate(request: Request) -> Imagegate:
    imagegate: Imagegate = request.app.state.imagegate
    return imagegate


def api_key_from(authorization: str | None) -> str | None:
    """The API key in `Basic base64(user:KEY)` or `Bearer KEY`, else None."""
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer":
        return value or None
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        _user, sep, key = decoded.partition(":")
        return key if sep and key else None
    return None


async def current_principal(
    request: Request, _basic: Annotated[object, Depends(basic_scheme)] = None
) -> Principal:
    key = api_key_from(request.headers.get("authorization"))
    principal = await get_imagegate(request).accounts.authenticate(key) if key else None
    if principal is None:
        raise Unauthorized("missing or invalid API key")
    request.state.principal = principal
    return principal


def project_from_path(entity: str, project: str) -> str:
    """The project a route's `{entity}/{project}` names; a malformed one is a 404."""
    try:
        split_project_id(f"{entity}/{project}")
    except ValueError as exc:
        raise NotFound(str(exc)) from exc
    return f"{entity}/{project}"


Caller = Annotated[Principal, Depends(current_principal)]


async def _imagegate_dependency(request: Request) -> Imagegate:
    # `async`: FastAPI runs a plain `def` dependency in a worker thread, a thread hop
    # (about a millisecond of CPU under load) on every request.
    return get_imagegate(request)


App = Annotated[Imagegate, Depends(_imagegate_dependency)]
