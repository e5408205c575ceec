"""Weave's content digest, so files stored here match what the Weave client computes."""

from __future__ import annotations

import base64
import hashlib
import re

DIGEST_PATTERN = re.compile(r"^[A-Za-z0-9_-]{43}$")


def weave_digest(data: bytes) -> str:
    """SHA-256, URL-safe base64, `-`→`X`, `_`→`Y`, no padding: 43 alphanumeric characters."""
    return weave_digest_of(hashlib.sha256(data).digest())


def weave_digest_of(sha256: bytes) -> str:
    """The Weave digest of bytes whose raw SHA-256 is `sha256` (hashed as they streamed)."""
    encoded = base64.urlsafe_b64encode(sha256).decode()
    return encoded.replace("-", "X").replace("_", "Y").rstrip("=")


def is_digest(value: str) -> bool:
    return bool(DIGEST_PATTERN.match(value))
