"""Signed image URLs, usable in a browser or <img> tag without an API key.

A URL carries `exp` (when it stops working, epoch seconds) and `sig`, an HMAC over the
project, digest and `exp` with the URL signing key (not the key that encrypts stored
secrets: rotating one leaves the other alone). `exp` is the end of the next time window
of `ttl` seconds, so every URL for an image is the same within a window (caches keep
working) and stays valid for at least `ttl` and at most twice that.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time

from starlette.requests import Request

SVG_MIMETYPE = "image/svg+xml"
MIME_EXTENSIONS = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/webp": "webp",
    "image/gif": "gif",
    SVG_MIMETYPE: "svg",
}
DEFAULT_URL_TTL = 7 * 24 * 3600  # seconds
# An SVG document: optional XML declaration, comments and doctype, then the root <svg>.
_SVG_START = re.compile(
    rb"^(?:\xef\xbb\xbf)?\s*(?:<\?xml[^>]*>\s*)?(?:(?:<!--.*?-->|<!DOCTYPE[^>]*>)\s*)*<svg[\s>]",
    re.DOTALL | re.IGNORECASE,
)
# SVG is markup that can carry script: wherever it is served, the browser must treat it
# as an inert image (no script, no plugins, nothing fetched, a unique origin).
SVG_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox"


def image_headers(mimetype: str) -> dict[str, str]:
    """Headers every image answer carries; SVG also gets the sandboxing CSP."""
    headers = {"X-Content-Type-Options": "nosniff"}
    if mimetype == SVG_MIMETYPE:
        headers["Content-Security-Policy"] = SVG_CSP
    return headers


def file_signature(key: bytes, project_id: str, digest: str, expires: int) -> str:
    mac = hmac.new(key, f"{project_id}/{digest}/{expires}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac[:18]).decode()


def expiry(ttl: int, now: float | None = None) -> int:
    """The end of the window after the current one: between `ttl` and 2 x `ttl` away."""
    now = time.time() if now is None else now
    return (int(now) // ttl + 2) * ttl


def image_url(
    base_url: str,
    key: bytes,
    project_id: str,
    digest: str,
    mimetype: str,
    *,
    ttl: int = DEFAULT_URL_TTL,
) -> str:
    """The signed URL of an image; relative (`/files/...`) when `base_url` is ""."""
    ext = MIME_EXTENSIONS.get(mimetype, "bin")
    expires = expiry(ttl)
    sig = file_signature(key, project_id, digest, expires)
    return f"{base_url.rstrip('/')}/files/{project_id}/{digest}.{ext}?exp={expires}&sig={sig}"


def signature_valid(
    key: bytes, project_id: str, digest: str, expires: str | None, sig: str
) -> bool:
    """Whether `sig` signs this image until `expires`, and that moment has not passed."""
    if not expires or not (expires.isascii() and expires.isdigit()) or len(expires) > 12:
        return False
    expected = file_signature(key, project_id, digest, int(expires))
    # As bytes: compare_digest refuses a non-ASCII str with TypeError (a 500).
    return hmac.compare_digest(sig.encode("utf-8", "replace"), expected.encode()) and (
        int(expires) > time.time()
    )


def public_base(request: Request, public_url: str | None, allowed_hosts: frozenset[str]) -> str:
    """The base of URLs handed out: the configured public URL; else the request's own
    origin if its Host is one of the allowed hosts; else "" (relative URLs). A Host
    header alone never decides where a URL points."""
    if public_url:
        return public_url
    host = request.headers.get("host", "")
    if host and host.lower() in allowed_hosts:
        return f"{request.url.scheme}://{host}"
    return ""


def sniff_image_type(data: bytes) -> str:
    """The MIME type of image bytes from their signature (never from a file name)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if _SVG_START.match(data[:4096]):
        return SVG_MIMETYPE
    return "application/octet-stream"
