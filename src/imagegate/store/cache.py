"""A short-lived, process-local cache for what nearly every request looks up: the caller
behind an API key (with their teams and roles) and the team's provider keys.

Several stateless replicas (and worker processes) share one database, and a revoked key,
a removed membership or a rotated provider key must take effect on every one of them
within a second. So an entry lives at most `ttl` seconds (≤ 1 s), counted from when its
database read *began*: whatever was committed before that read is in it, so a change is
seen everywhere at most `ttl` after it commits. The process that makes the change also
clears its own cache at once. Between those, a busy key costs one lookup per `ttl`
instead of one per request, and concurrent misses for the same key share one lookup.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TTLCache(Generic[K, V]):
    def __init__(self, ttl: float, *, max_entries: int = 10_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: dict[K, tuple[float, V]] = {}
        self._loading: dict[K, asyncio.Future[V]] = {}
        self._epoch = 0  # bumped by clear(): a load begun before it is not kept

    async def get(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        """The value for `key`, loading it (once, however many ask at once) when missing
        or older than the ttl. A failed load is not kept, and is not shared either."""
        if self.ttl <= 0:
            return await load()
        now = time.monotonic()
        entry = self._entries.get(key)
        if entry is not None and entry[0] > now:
            return entry[1]
        pending = self._loading.get(key)
        if pending is not None:
            try:
                return await asyncio.shield(pending)
            except Exception:
                # The shared read failed (a connect that timed out under load, say): this
                # request tries its own, as it would uncached, so one failure is not
                # everyone's. A database that is down fails each of them anyway.
                return await load()
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._loading[key] = future
        epoch = self._epoch
        try:
            value = await load()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning without joiners
            raise
        else:
            future.set_result(value)
            if epoch == self._epoch:
                if len(self._entries) >= self.max_entries:
                    self._evict(now)
                self._entries[key] = (now + self.ttl, value)
            return value
        finally:
            if self._loading.get(key) is future:
                del self._loading[key]

    def clear(self) -> None:
        """Forget everything, including loads under way (this process changed the data)."""
        self._entries.clear()
        self._loading.clear()
        self._epoch += 1

    def _evict(self, now: float) -> None:
        expired = [key for key, (until, _) in self._entries.items() if until <= now]
        for key in expired:
            del self._entries[key]
        if len(self._entries) >= self.max_entries:  # all fresh: drop the oldest half
            for key in list(self._entries)[: self.max_entries // 2]:
                del self._entries[key]
