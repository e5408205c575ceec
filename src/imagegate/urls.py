"""Stable, signed image URLs: usable in a browser or <img> tag without an API key."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

SVG_MIMETYPE = "image/svg+xml"
MIME_EXTENSIONS = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/webp": "webp",
    "image/gif": "gif",
    SVG_MIMETYPE: "svg",
}
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


def file_signature(key: bytes, project_id: str, digest: str) -> str:
    # The signature covers the project and digest only, so a URL never expires and
    # the same image always has the same URL; revoking means rotating the key.
    mac = hmac.new(key, f"{project_id}/{digest}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac[:18]).decode()


def image_url(base_url: str, key: bytes, project_id: str, digest: str, mimetype: str) -> str:
    ext = MIME_EXTENSIONS.get(mimetype, "bin")
    sig = file_signature(key, project_id, digest)
    return f"{base_url.rstrip('/')}/files/{project_id}/{digest}.{ext}?sig={sig}"


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
