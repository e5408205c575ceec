"""Rate limits: requests and images per minute, per API key and per project, counted in
the database so every replica shares one count.

Fixed one-minute windows. Taking a request is one conditional UPDATE per limited subject
(`requests + 1 <= limit AND images + n <= limit`), atomic on both backends like the
budget reservation, so replicas together never let more through than the limit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from imagegate.errors import RateLimited
from imagegate.store.tables import rate_windows

WINDOW = timedelta(minutes=1)


@dataclass(frozen=True)
class Limits:
    """Per-minute limits; 0 means none."""

    key_requests: int = 0
    key_images: int = 0
    project_requests: int = 0
    project_images: int = 0

    @property
    def any(self) -> bool:
        return any((self.key_requests, self.key_images, self.project_requests, self.project_images))


class RateLimiter:
    def __init__(self, engine: AsyncEngine, limits: Limits) -> None:
        self.engine = engine
        self.limits = limits

    async def take(self, *, key_id: str | None, project_id: str, images: int) -> None:
        """Count one request of `images` images, or raise RateLimited (counting nothing)."""
        if not self.limits.any:
            return
        now = datetime.now(UTC)
        start = now.replace(second=0, microsecond=0)
        subjects = [("project", f"project:{project_id}", self.limits.project_requests,
                     self.limits.project_images)]  # fmt: skip
        if key_id is not None:
            subjects.append(
                ("key", f"key:{key_id}", self.limits.key_requests, self.limits.key_images)
            )
        async with self.engine.begin() as conn:
            for scope, subject, max_requests, max_images in subjects:
                if not (max_requests or max_images):
                    continue
                await _ensure_window(conn, subject, start)
                query = rate_windows.update().where(
                    rate_windows.c.subject == subject, rate_windows.c.window_start == start
                )
                if max_requests:
                    query = query.where(rate_windows.c.requests + 1 <= max_requests)
                if max_images:
                    query = query.where(rate_windows.c.images + images <= max_images)
                row = (
                    await conn.execute(
                        query.values(
                            requests=rate_windows.c.requests + 1,
                            images=rate_windows.c.images + images,
                        ).returning(rate_windows.c.requests)
                    )
                ).first()
                if row is None:
                    retry_after = max(1, math.ceil((start + WINDOW - now).total_seconds()))
                    used = (
                        await conn.execute(
                            sa.select(rate_windows.c.requests, rate_windows.c.images).where(
                                rate_windows.c.subject == subject,
                                rate_windows.c.window_start == start,
                            )
                        )
                    ).one()
                    kind = (
                        "requests"
                        if max_requests and used.requests + 1 > max_requests
                        else "images"
                    )
                    limit = max_requests if kind == "requests" else max_images
                    raise RateLimited(
                        f"rate limit: this {'API key' if scope == 'key' else 'project'} may make "
                        f"{limit} {'generation requests' if kind == 'requests' else 'images'} "
                        f"a minute; retry in {retry_after} s",
                        retry_after=retry_after,
                        limit={"scope": scope, "kind": kind, "per_minute": limit},
                    )


async def _ensure_window(conn: AsyncConnection, subject: str, start: datetime) -> None:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    created = await conn.execute(
        dialect.insert(rate_windows)
        .values(subject=subject, window_start=start, requests=0, images=0)
        .on_conflict_do_nothing()
    )
    if created.rowcount:  # a new minute for this subject: drop its finished ones
        await conn.execute(
            rate_windows.delete().where(
                rate_windows.c.subject == subject, rate_windows.c.window_start < start
            )
        )
