"""What every router needs: the app's services and the authenticated caller."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPBasic

from imagegate.core import Imagegate
from imagegate.errors import Forbidden, Unauthorized
from imagegate.store import Principal


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


def authorize(principal: Principal, project_id: str, *, generate: bool = False) -> None:
    """Members of a project's entity may use it; everyone else gets the same 403,
    whether or not the project exists, so existence never leaks. With `generate`, the
    caller must also be allowed to spend: owners and members, not viewers."""
    entity = project_id.split("/", 1)[0]
    if entity not in principal.entities:
        raise Forbidden(f"you do not have access to project {project_id!r}")
    if generate and not principal.can_generate(entity):
        raise Forbidden(f"you are a viewer in team {entity!r}: viewers can read but not generate")


Caller = Annotated[Principal, Depends(current_principal)]
App = Annotated[Imagegate, Depends(get_imagegate)]
