"""Per-caller limits on concurrent work, so one tenant cannot take every turn."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from imagegate.errors import TooManyRequests


class Slot:
    """One held turn; `release` may be called more than once (a stream's end and its
    cleanup both call it)."""

    def __init__(self, limiter: KeyedLimiter, key: str) -> None:
        self._limiter, self._key, self._held = limiter, key, True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._limiter._release(self._key)


class KeyedLimiter:
    """At most `per_key` holders per key; more wait up to `wait` seconds, then 429."""

    def __init__(self, per_key: int, wait: float) -> None:
        self.per_key = per_key
        self.wait = wait
        # key -> (semaphore, holders + waiters); dropped at zero so the map stays small.
        self._keys: dict[str, tuple[asyncio.Semaphore, int]] = {}

    async def acquire(self, key: str) -> Slot:
        semaphore, users = self._keys.get(key) or (asyncio.Semaphore(self.per_key), 0)
        self._keys[key] = (semaphore, users + 1)
        try:
            await asyncio.wait_for(semaphore.acquire(), self.wait)
        except TimeoutError:
            self._forget(key)
            raise TooManyRequests(
                f"too many concurrent reads with this key (at most {self.per_key}); retry later"
            ) from None
        except BaseException:
            self._forget(key)
            raise
        return Slot(self, key)

    @asynccontextmanager
    async def slot(self, key: str) -> AsyncIterator[None]:
        held = await self.acquire(key)
        try:
            yield
        finally:
            held.release()

    def _release(self, key: str) -> None:
        self._keys[key][0].release()
        self._forget(key)

    def _forget(self, key: str) -> None:
        semaphore, users = self._keys[key]
        if users <= 1:
            del self._keys[key]
        else:
            self._keys[key] = (semaphore, users - 1)
