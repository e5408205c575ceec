"""UUIDv7 call ids: time-ordered, so ids sort in the order calls started (Weave uses them)."""

from __future__ import annotations

import os
import time
import uuid


def uuid7() -> str:
    """A random UUIDv7 (RFC 9562) as its canonical string."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & 0xFFFF_FFFF_FFFF) << 80  # 48-bit unix milliseconds
    value |= 0x7 << 76  # version
    value |= (rand >> 62 & 0xFFF) << 64  # 12 random bits (rand_a)
    value |= 0b10 << 62  # RFC 4122 variant
    value |= rand & ((1 << 62) - 1)  # 62 random bits (rand_b)
    return str(uuid.UUID(int=value))
