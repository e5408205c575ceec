"""The request guard: checks that run before routing, so no unauthenticated or malformed
request costs much (issue 11).

- Bodies over the limit get 413 as soon as that is known (from Content-Length, or while
  streaming a chunked body), and are never buffered whole.
- API endpoints read the body as JSON when Content-Type is missing (some Weave client
  paths send it that way) or is curl's `-d` default, form-urlencoded. The web pages
  under /ui post real HTML forms and are left alone, but get a small body limit.
- A JSON body with an unpaired UTF-16 surrogate (`"\\ud800"`) is a 422 naming the
  field: such text cannot be stored, logged or compared, wherever it appears.
- Browsers never send API credentials cross-site: a browser that once visited
  `http://api:KEY@host/` replays the cached Basic credentials on any request to the
  host, so a request a browser marks as cross-site (Sec-Fetch-Site, else Origin) that
  carries Basic credentials is refused. Non-browser clients send neither header.
- Uploads (/file/create, the OpenAI door's edits) are authenticated from the headers
  before the multipart body is read.
- Under /v1 (the OpenAI door) every answer is in OpenAI's error envelope, so OpenAI's
  SDKs raise their own error types.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imagegate.api.deps import api_key_from
from imagegate.config import Settings
from imagegate.errors import OPENAI_PREFIX, auth_challenge

UPLOAD_PATHS = frozenset({"/file/create", "/files/create", "/v1/images/edits"})
FORM_LIMIT = 256 * 1024  # /ui forms: a prompt (32,000 characters) and a few fields

# A JSON escape of a surrogate, or an escaped backslash (consumed so `\\ud800`, the text
# "\ud800", is not mistaken for one). A high surrogate must be followed by a low one.
_ESCAPES = re.compile(
    rb"\\\\|\\u[dD][89abAB][0-9a-fA-F]{2}(?:\\u[dD][c-fC-F][0-9a-fA-F]{2})?"
    rb"|\\u[dD][c-fC-F][0-9a-fA-F]{2}"
)


def has_lone_surrogate(body: bytes) -> bool:
    if b"\\u" not in body:
        return False
    for match in _ESCAPES.finditer(body):
        token = match.group()
        if token == b"\\\\":
            continue
        if len(token) == 6:  # a high surrogate without its low half, or a lone low one
            return True
    return False


def is_cross_site(headers: dict[bytes, bytes], host: str | None) -> bool:
    """Whether a browser says this request comes from another site."""
    fetch_site = headers.get(b"sec-fetch-site")
    if fetch_site is not None:
        return fetch_site not in (b"same-origin", b"none")
    origin = headers.get(b"origin")
    if origin is None:
        return False  # not a browser's cross-origin request (curl, SDKs, the Weave client)
    if origin == b"null":
        return True
    return urlsplit(origin.decode("latin-1")).netloc != (host or "")


class RequestGuard:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        headers = dict(scope["headers"])
        web = path.startswith("/ui")
        openai = path.startswith(OPENAI_PREFIX)
        if not web and _ambient_basic(headers, scope):
            host = headers.get(b"host", b"").decode("latin-1")
            if is_cross_site(headers, host):
                await _answer(
                    send, 403, "cross-site requests may not use stored credentials", openai=openai
                )
                return
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        upload = path in UPLOAD_PATHS
        if upload and not await _authenticated(scope, headers):
            # Before a byte of the (up to 64 MiB) body is read or spooled to disk.
            await _answer(
                send, 401, "missing or invalid API key", _challenge(headers), openai=openai
            )
            return
        limit = (
            self.settings.max_upload_bytes
            if upload
            else min(self.settings.max_request_bytes, FORM_LIMIT)
            if web
            else self.settings.max_request_bytes
        )
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _too_large(send, limit, openai)
            return
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        api_json = not upload and not web
        if api_json and content_type in (b"", b"application/x-www-form-urlencoded"):
            scope = {
                **scope,
                "headers": [(k, v) for k, v in scope["headers"] if k != b"content-type"]
                + [(b"content-type", b"application/json")],
            }
            content_type = b"application/json"

        received = 0
        rejected = False

        async def limited_receive() -> Message:
            nonlocal received, rejected
            if rejected:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # Answer now and tell the app the client is gone, so it stops reading.
                    rejected = True
                    await _too_large(send, limit, openai)
                    return {"type": "http.disconnect"}
            return message

        app_receive: Receive = limited_receive
        if api_json and content_type == b"application/json":
            # JSON bodies are small and read whole by the app anyway: check them first.
            body = await _read_body(limited_receive)
            if body is None:
                return  # too large (answered) or the client went away
            if has_lone_surrogate(body):
                await _surrogate_answer(send, body, openai)
                return
            app_receive = _replay(body, receive)

        async def guarded_send(message: Message) -> None:
            if not rejected:  # after a 413 the app's own answer has nowhere to go
                await send(message)

        try:
            await self.app(scope, app_receive, guarded_send)
        except Exception:
            if not rejected:
                raise


def surrogate_path(value: Any, path: list[str | int]) -> list[str | int] | None:
    """Where in parsed JSON the first text with an unpaired surrogate is, else None."""
    if isinstance(value, str):
        return path if not value.isascii() and _unencodable(value) else None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(
        value, list) else ()  # fmt: skip
    for key, item in items:
        if isinstance(key, str) and _unencodable(key):
            return [*path, key.encode("utf-8", "backslashreplace").decode()]
        if (found := surrogate_path(item, [*path, key])) is not None:
            return found
    return None


def _unencodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


async def _surrogate_answer(send: Send, body: bytes, openai: bool = False) -> None:
    """422 in the shape of a validation error, naming the field (as pydantic would); at
    the OpenAI door, OpenAI's 400 naming the param."""
    try:
        loc = surrogate_path(json.loads(body), ["body"]) or ["body"]
    except ValueError:
        loc = ["body"]  # not JSON after all: the app would have said 422 too
    message = "text holds an unpaired UTF-16 surrogate (e.g. \\ud800), which no database can store"
    if openai:
        param = str(loc[1]) if len(loc) > 1 else None
        await _answer(send, 400, f"{param or 'body'}: {message}", param=param, openai=True)
        return
    detail = [{"loc": loc, "msg": message, "type": "value_error"}]
    await send(
        {
            "type": "http.response.start",
            "status": 422,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": json.dumps({"detail": detail}).encode()})


def _ambient_basic(headers: dict[bytes, bytes], scope: Scope) -> bool:
    """Basic credentials (which browsers cache and resend on their own); a signed image
    URL's GET is exempt: it is meant for <img> tags on any site and ignores them."""
    auth = headers.get(b"authorization", b"")
    if auth[:6].lower() != b"basic ":
        return False
    signed_get = scope["method"] in ("GET", "HEAD") and b"sig=" in scope.get("query_string", b"")
    return not signed_get


def _challenge(headers: dict[bytes, bytes]) -> str:
    user_agent = headers.get(b"user-agent", b"").decode("latin-1")
    return auth_challenge(user_agent, b"sec-fetch-mode" in headers)


async def _authenticated(scope: Scope, headers: dict[bytes, bytes]) -> bool:
    key = api_key_from(headers.get(b"authorization", b"").decode("latin-1") or None)
    if key is None:
        return False
    imagegate: Any = scope["app"].state.imagegate
    return await imagegate.accounts.authenticate(key) is not None


async def _read_body(receive: Receive) -> bytes | None:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # the disconnect, when it comes

    return replay


async def _too_large(send: Send, limit: int, openai: bool = False) -> None:
    message = f"request body is larger than the limit of {limit} bytes"
    await _answer(send, 413, message, close=True, openai=openai)


async def _answer(
    send: Send,
    status: int,
    message: str,
    challenge: str | None = None,
    *,
    close: bool = False,
    openai: bool = False,
    param: str | None = None,
) -> None:
    """A JSON answer: `{"detail"}`, or under /v1 OpenAI's `{"error": {...}}` envelope."""
    headers = [(b"content-type", b"application/json")]
    if challenge:
        headers.append((b"www-authenticate", challenge.encode()))
    if close:
        headers.append((b"connection", b"close"))
    if openai:
        code = {401: "invalid_api_key", 403: "permission_denied"}.get(status)
        kind = "server_error" if status >= 500 else "invalid_request_error"
        error = {"message": message, "type": kind, "param": param, "code": code}
        body = json.dumps({"error": error})
    else:
        body = json.dumps({"detail": message})
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body.encode()})
