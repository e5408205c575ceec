"""Idempotent generation: a request carrying `Idempotency-Key` (or the Weave client's
`X-Weave-Retry-Id`) is generated at most once per (project, user, key).

Clients built on Stainless's SDKs (the Weave client, OpenAI's Python SDK) retry a
timed-out or dropped request by themselves, with an identical body, no key, and only
`x-stainless-retry-count: 1` (then 2) to say so. Such a request gets a key derived from
its body: the first attempt (count 0) registers under it, and a retry joins the attempt
that is still running or replays the one that has finished, instead of paying again.

The database enforces it, so it holds across replicas: the first request claims the key
by INSERTing its row; a second INSERT of the same primary key fails, and that request
instead replays the stored answer, waits (bounded) for the running one, or gets 409. A
claim is a lease the holder renews while it works, so a crashed replica blocks its key
only until the lease runs out; then the next request for the key takes it over.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from imagegate.errors import Conflict, ImagegateError, InvalidInput
from imagegate.generation import Generation
from imagegate.store.tables import idempotency_keys as keys

log = logging.getLogger("imagegate.idempotency")

HEADERS = ("Idempotency-Key", "X-Weave-Retry-Id")  # the first one present wins
MAX_KEY_CHARS = 255
SWEEP_EVERY = 60.0  # seconds between deletes of expired keys, per process
# Sent by Stainless-generated SDKs: 0 on a first attempt, n on their own n-th retry.
RETRY_COUNT_HEADER = "x-stainless-retry-count"
RETRY_KEY_PREFIX = "sdk-retry:"
# A retry follows its first attempt within the client's timeout and backoff; a finished
# answer is kept this long for one, and a retry waits this long at most for a running one
# (a holder that stops is taken over sooner, when its lease runs out).
RETRY_JOIN_SECONDS = 3600.0


@dataclass(frozen=True)
class RequestKey:
    """The key a request is made once under: the caller's own, or one derived from the
    body for an SDK's automatic retry."""

    key: str
    derived: bool = False  # from the body: an SDK's attempt, not the caller's key
    retry: bool = False  # derived, and the SDK says this repeats an earlier attempt


def request_key(headers: Mapping[str, str], body_hash: str) -> RequestKey | None:
    """The request's key: its idempotency header, else (for a Stainless SDK's request)
    one derived from the body; None when the request is to be made as it comes."""
    explicit = idempotency_key(headers)
    if explicit is not None:
        return RequestKey(explicit)
    count = headers.get(RETRY_COUNT_HEADER)
    if count is None:
        return None
    retry = count.strip() not in ("", "0")
    return RequestKey(RETRY_KEY_PREFIX + body_hash, derived=True, retry=retry)


def idempotency_key(headers: Mapping[str, str]) -> str | None:
    """The request's idempotency key, None without one; 422 for a malformed one."""
    for name in HEADERS:
        value = headers.get(name)
        if value is None:
            continue
        value = value.strip()
        if not value or len(value) > MAX_KEY_CHARS or not value.isprintable():
            raise InvalidInput(
                ["header", name.lower()],
                f"{name} must be 1 to {MAX_KEY_CHARS} printable characters",
            )
        return value
    return None


def request_hash(req: BaseModel) -> str:
    """SHA-256 of the validated request's canonical JSON: what "the same body" means.

    Validated, so formatting, key order and ignored fields make no difference;
    `wb_user_id` is left out because the server sets it.
    """
    body = req.model_dump(mode="json", include={"project_id", "inputs", "track_llm_call"})
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class _Key:
    project_id: str
    user_id: str
    key: str

    def where(self) -> sa.ColumnElement[bool]:
        return sa.and_(
            keys.c.project_id == self.project_id,
            keys.c.user_id == self.user_id,
            keys.c.key == self.key,
        )


def _now() -> datetime:
    return datetime.now(UTC)


class IdempotencyStore:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        ttl: float,
        wait: float,
        lease: float,
    ) -> None:
        self.engine = engine
        self.ttl = timedelta(seconds=ttl)
        self.wait = wait
        self.lease = timedelta(seconds=lease)
        self._last_sweep = 0.0

    def run_once(
        self,
        headers: Mapping[str, str],
        *,
        project_id: str,
        user_id: str,
        request_hash: str,
        work: Callable[[], Awaitable[Generation]],
    ) -> Awaitable[Generation]:
        """`work()`'s generation, under the request's key (`request_key`) if it has one:
        what every door calls. A malformed key is refused (422) right here, before
        anything is awaited."""
        key = request_key(headers, request_hash)
        if key is None:
            return work()
        # A key derived from the request lives only as long as a retry can join it, and a
        # first attempt is new work even when an identical one ran before (asking twice
        # for the same prompt is legitimate): it takes the key over.
        join_s = RETRY_JOIN_SECONDS if key.derived else None
        return self.run(
            project_id=project_id,
            user_id=user_id,
            key=key.key,
            request_hash=request_hash,
            work=work,
            fresh=key.derived and not key.retry,
            ttl=join_s,
            wait=join_s,
        )

    async def run(
        self,
        *,
        project_id: str,
        user_id: str,
        key: str,
        request_hash: str,
        work: Callable[[], Awaitable[Generation]],
        fresh: bool = False,
        ttl: float | None = None,
        wait: float | None = None,
    ) -> Generation:
        """`work()`'s generation, made at most once per key while the key lives: a repeat
        gets the first one back, and so (derived the same way) the same answer. With
        `fresh`, the work runs whatever the key holds and the key then refers to it."""
        await self._maybe_sweep()
        pk = _Key(project_id, user_id, key)
        lifetime = self.ttl if ttl is None else timedelta(seconds=ttl)
        if fresh:
            owner, stored = await self._replace(pk, request_hash, lifetime), None
            if owner is None:  # an identical first attempt took the key meanwhile
                return await work()
        else:
            owner, stored = await self._claim(pk, request_hash, lifetime, wait)
        if owner is None:
            return _replayed(stored)
        renew = asyncio.create_task(self._renew(pk, owner))
        try:
            result = await work()
        except BaseException:
            # Nothing worth replaying (a 422, a 503, a cancelled request): free the key
            # so a corrected retry can run.
            renew.cancel()
            await self._release(pk, owner)
            raise
        renew.cancel()
        await self._complete(pk, owner, result)
        return result

    async def forget_calls(self, project_id: str, call_ids: Sequence[str]) -> None:
        """Drop the stored answers of these (deleted) calls: a retry must not replay a
        deleted generation. A later retry with the same key generates anew."""
        async with self.engine.begin() as conn:
            for call_id in call_ids:
                await conn.execute(
                    keys.delete().where(
                        keys.c.project_id == project_id,
                        sa.cast(keys.c.response, sa.Text).like(f"%{call_id}%"),
                    )
                )

    async def _claim(
        self, pk: _Key, request_hash: str, ttl: timedelta, wait: float | None
    ) -> tuple[str | None, Any]:
        """(our owner token, None) once we hold the key, or (None, stored answer)."""
        deadline = time.monotonic() + (self.wait if wait is None else wait)
        delay = 0.02
        insert = True
        vanished = 0  # INSERT refused, yet no row: a race, or (repeated) a bug
        while True:
            now = _now()
            owner = uuid.uuid4().hex
            if insert and await self._insert(pk, request_hash, owner, now, ttl):
                return owner, None
            # Someone holds the key: see what they have. Waiting re-reads the row
            # rather than re-INSERTing, which would log an error on each try.
            async with self.engine.connect() as conn:
                row = (await conn.execute(sa.select(keys).where(pk.where()))).first()
            insert = row is None
            if row is None:
                vanished += 1
                if vanished > 5:
                    raise RuntimeError(f"cannot claim idempotency key {pk}")
                continue  # released or swept meanwhile: claim again
            running = row.state == "running"
            lease_over = running and (row.lease_until is None or row.lease_until <= now)
            if row.expires_at <= now and (not running or lease_over):
                await self._delete(pk, expired_before=now)
                insert = True
                continue
            if row.request_hash != request_hash:
                raise InvalidInput(
                    ["header", "idempotency-key"],
                    "this idempotency key was already used with a different request body",
                )
            if not running:
                return None, row.response
            if lease_over and await self._take_over(pk, row.owner, owner, now):
                log.warning("took over the idempotency key of a holder that stopped: %s", pk)
                return owner, None
            if time.monotonic() >= deadline:
                raise Conflict(
                    "a request with this idempotency key is still in progress; retry later"
                )
            await asyncio.sleep(max(0.0, min(delay, deadline - time.monotonic())))
            delay = min(delay * 2, 0.25)

    async def _replace(self, pk: _Key, request_hash: str, ttl: timedelta) -> str | None:
        """Claim the key whatever it holds (our owner token), or None when a concurrent
        claim won the race."""
        owner = uuid.uuid4().hex
        async with self.engine.begin() as conn:
            await conn.execute(keys.delete().where(pk.where()))
        if await self._insert(pk, request_hash, owner, _now(), ttl):
            return owner
        return None

    async def _insert(
        self, pk: _Key, request_hash: str, owner: str, now: datetime, ttl: timedelta
    ) -> bool:
        """Claim the key; False when its row exists (the primary key refuses a second)."""
        try:
            async with self.engine.begin() as conn:
                await conn.execute(
                    keys.insert().values(
                        project_id=pk.project_id,
                        user_id=pk.user_id,
                        key=pk.key,
                        request_hash=request_hash,
                        state="running",
                        owner=owner,
                        created_at=now,
                        lease_until=now + self.lease,
                        expires_at=now + ttl,
                    )
                )
        except IntegrityError:
            return False
        return True

    async def _take_over(self, pk: _Key, old: str | None, new: str, now: datetime) -> bool:
        async with self.engine.begin() as conn:
            result = await conn.execute(
                keys.update()
                .where(pk.where(), keys.c.state == "running", keys.c.owner == old)
                .values(owner=new, lease_until=now + self.lease)
            )
        return bool(result.rowcount)

    async def _renew(self, pk: _Key, owner: str) -> None:
        """Keep the lease alive while the work runs (a third of the lease apart)."""
        while True:
            await asyncio.sleep(self.lease.total_seconds() / 3)
            try:
                async with self.engine.begin() as conn:
                    await conn.execute(
                        keys.update()
                        .where(pk.where(), keys.c.owner == owner)
                        .values(lease_until=_now() + self.lease)
                    )
            except Exception as exc:  # the next round may succeed; the lease has slack
                log.warning("renewing idempotency lease %s failed: %s", pk, exc)

    async def _complete(self, pk: _Key, owner: str, result: Generation) -> None:
        try:
            async with self.engine.begin() as conn:
                await conn.execute(
                    keys.update()
                    .where(pk.where(), keys.c.owner == owner)
                    .values(
                        state="done",
                        owner=None,
                        lease_until=None,
                        response={"generation": result.to_record()},
                    )
                )
        except Exception:
            # The generation is done and recorded; the caller should still get it. Only a
            # retry after the lease runs out could generate again.
            log.exception("storing the answer for idempotency key %s failed", pk)

    async def _release(self, pk: _Key, owner: str) -> None:
        try:
            async with self.engine.begin() as conn:
                await conn.execute(keys.delete().where(pk.where(), keys.c.owner == owner))
        except Exception as exc:  # the lease runs out on its own
            log.warning("releasing idempotency key %s failed: %s", pk, exc)

    async def _delete(self, pk: _Key, *, expired_before: datetime) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(keys.delete().where(pk.where(), keys.c.expires_at <= expired_before))

    async def _maybe_sweep(self) -> None:
        if time.monotonic() - self._last_sweep < SWEEP_EVERY:
            return
        self._last_sweep = time.monotonic()
        now = _now()
        async with self.engine.begin() as conn:
            await conn.execute(
                keys.delete().where(
                    keys.c.expires_at <= now,
                    sa.or_(keys.c.state == "done", keys.c.lease_until <= now),
                )
            )


def _replayed(stored: Any) -> Generation:
    """The generation kept with a finished key (images the file store has are kept by
    digest only; an untracked generation's images, stored nowhere else, with their bytes)."""
    record = stored.get("generation") if isinstance(stored, dict) else None
    if record is None:
        raise ImagegateError("the answer kept for this idempotency key is unreadable")
    return Generation.from_record(record)
