"""Weave's content digest, so files stored here match what the Weave client computes."""

from __future__ import annotations

import base64
import hashlib
import re

DIGEST_PATTERN = re.compile(r"^[A-Za-z0-9_-]{43}$")


def weave_digest(data: bytes) -> str:
    """SHA-256, URL-safe base64, `-`→`X`, `_`→`Y`, no padding: 43 alphanumeric characters."""
    encoded = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode()
    return encoded.replace("-", "X").replace("_", "Y").rstrip("=")


def is_digest(value: str) -> bool:
    return bool(DIGEST_PATTERN.match(value))
