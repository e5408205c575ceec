"""Browser sessions and CSRF protection for the /ui pages.

The session cookie holds a random token: never the API key itself. The server keeps the
token's hash with the key's hash (store/sessions.py), so signing out ends the session for
every copy of the cookie, and revoking the key ends all its sessions at once.
CSRF tokens are an HMAC over a random per-browser nonce cookie and the session value, so a
token is worthless in another browser or after signing in or out.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote

from fastapi import Request
from starlette.responses import Response

from imagegate.core import Imagegate
from imagegate.errors import BadRequest, Forbidden, NotFound, Unauthorized
from imagegate.names import split_project_id
from imagegate.store import Principal

SESSION_COOKIE = "ig_session"
NONCE_COOKIE = "ig_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
CSRF_MESSAGE = "The form has expired or did not come from this site. Reload and retry."
SESSION_MAX_AGE = 14 * 24 * 3600  # seconds; signing in again is cheap, a stolen cookie is not


class SignInRequired(Unauthorized):
    """No valid session: pages redirect to the sign-in form, other resources get 401
    (its own handler, web/__init__.py, comes before the tree's)."""

    def __init__(self, next_path: str, *, clear: bool = False) -> None:
        super().__init__("sign in first")
        self.next_path = next_path
        self.clear = clear  # the browser holds a stale session cookie worth removing


def _subkey(app: Imagegate, purpose: str) -> bytes:
    # One secret, separate keys per use: a session signature can never pass as a CSRF
    # token or an image URL signature.
    return hmac.new(app.signing_key, f"imagegate-web:{purpose}".encode(), hashlib.sha256).digest()


def _mac(key: bytes, message: str) -> str:
    digest = hmac.new(key, message.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _same(given: str, expected: str) -> bool:
    # Constant-time, and as bytes: compare_digest refuses non-ASCII str (a 500, not a 403).
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode())


def is_https(request: Request) -> bool:
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return request.url.scheme == "https" or forwarded == "https"


def set_cookie(
    request: Request, response: Response, name: str, value: str, max_age: int | None
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/ui",
        httponly=True,
        samesite="lax",
        secure=is_https(request),
    )


def clear_cookie(request: Request, response: Response, name: str) -> None:
    response.delete_cookie(
        name, path="/ui", httponly=True, samesite="lax", secure=is_https(request)
    )


@dataclass
class WebContext:
    """What a /ui request knows about its browser: app, signed-in principal, CSRF."""

    request: Request
    app: Imagegate
    principal: Principal | None
    session: str  # the session cookie value, "" when signed out
    nonce: str
    new_nonce: bool

    @property
    def csrf_token(self) -> str:
        return _mac(_subkey(self.app, "csrf"), f"{self.nonce}|{self.session}")

    def check_csrf(self, submitted: str | None) -> None:
        """403 unless the submitted token was issued to this browser and session."""
        if not submitted or not _same(submitted, self.csrf_token):
            raise Forbidden(CSRF_MESSAGE)

    def user(self) -> Principal:
        assert self.principal is not None  # only pages behind require_user() call this
        return self.principal

    def can_see(self, entity: str) -> bool:
        return self.principal is not None and entity in self.principal.entities

    def finish(self, response: Response) -> Response:
        """Set the nonce cookie if this request created one; pages call this last."""
        if self.new_nonce:
            set_cookie(self.request, response, NONCE_COOKIE, self.nonce, None)
        return response


def imagegate_of(request: Request) -> Imagegate:
    app: Imagegate = request.app.state.imagegate
    return app


async def web_context(request: Request) -> WebContext:
    """The context of any /ui request, signed in or not."""
    app = imagegate_of(request)
    nonce = request.cookies.get(NONCE_COOKIE, "")
    new_nonce = len(nonce) < 16
    if new_nonce:
        nonce = secrets.token_urlsafe(16)
    session = request.cookies.get(SESSION_COOKIE, "")
    principal = None
    key_hash = await app.sessions.key_hash(session)
    if key_hash is not None:
        principal = await app.accounts.authenticate_hash(key_hash)
    return WebContext(request, app, principal, session if principal else "", nonce, new_nonce)


async def require_user(request: Request) -> WebContext:
    """The context of a signed-in request; otherwise SignInRequired."""
    ctx = await web_context(request)
    if ctx.principal is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise SignInRequired(target, clear=SESSION_COOKIE in request.cookies)
    return ctx


def require_entity(ctx: WebContext, entity: str) -> None:
    """Members only. Non-members get the same 404 whether or not the project exists."""
    if not ctx.can_see(entity):
        raise NotFound("No such project, or you are not a member of its team.")


def project_of(ctx: WebContext, entity: str, project: str) -> str:
    """`entity/project` from a page's path, for a member of the entity; else a 404 page."""
    try:
        split_project_id(f"{entity}/{project}")
    except ValueError as exc:
        raise NotFound("No such project.") from exc
    require_entity(ctx, entity)
    return f"{entity}/{project}"


def signin_url(next_path: str) -> str:
    return "/ui/signin" + (f"?next={quote(next_path, safe='/')}" if next_path else "")


def safe_next(value: str | None) -> str:
    """Only same-site /ui paths are followed after signing in (no open redirect)."""
    if value and value.startswith("/ui") and not value.startswith("//") and "\\" not in value:
        return value
    return "/ui/projects"


MAX_FORM_FIELDS = 64  # the largest form (generate) has about a dozen


async def read_form(request: Request) -> dict[str, str]:
    """A posted form, whatever Content-Type arrived.

    Cheap checks come first: a browser without this site's CSRF nonce cookie cannot
    pass the CSRF check, so its body is never read. The request guard caps /ui bodies
    (guard.FORM_LIMIT), and parsing is capped at MAX_FORM_FIELDS fields.

    The app's request guard relabels url-encoded bodies as JSON before routing (for the
    Weave API's sake), so url-encoded forms are parsed from the raw body here; fetch()
    with FormData arrives as multipart and goes through Starlette's parser.
    """
    if len(request.cookies.get(NONCE_COOKIE, "")) < 16:
        raise Forbidden(CSRF_MESSAGE)
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        form = await request.form(max_files=0, max_fields=MAX_FORM_FIELDS)
        return {k: v for k, v in form.items() if isinstance(v, str)}
    body = (await request.body()).decode("utf-8", errors="replace")
    try:
        return dict(parse_qsl(body, keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS))
    except ValueError as exc:
        raise BadRequest("The form has too many fields.") from exc
