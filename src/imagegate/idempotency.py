"""Idempotent /image/create: a request carrying `Idempotency-Key` (or the Weave client's
`X-Weave-Retry-Id`) is generated at most once per (project, user, key).

The database enforces it, so it holds across replicas: the first request claims the key
by INSERTing its row; a second INSERT of the same primary key fails, and that request
instead replays the stored answer, waits (bounded) for the running one, or gets 409. A
claim is a lease the holder renews while it works, so a crashed replica blocks its key
only until the lease runs out; then the next request for the key takes it over.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from imagegate.errors import Conflict, ImagegateError, InvalidInput
from imagegate.store.files import FileStore
from imagegate.store.tables import idempotency_keys as keys

log = logging.getLogger("imagegate.idempotency")

HEADERS = ("Idempotency-Key", "X-Weave-Retry-Id")  # the first one present wins
MAX_KEY_CHARS = 255
SWEEP_EVERY = 60.0  # seconds between deletes of expired keys, per process


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
        files: FileStore,
        *,
        ttl: float,
        wait: float,
        lease: float,
        url_for: Callable[[str, str, str, str], str] | None = None,
    ) -> None:
        self.engine = engine
        self.files = files
        # (base_url, project_id, digest, mimetype) -> a signed image URL: a replayed
        # answer's URLs are made anew, for the replay's own base and expiry window.
        self.url_for = url_for
        self.ttl = timedelta(seconds=ttl)
        self.wait = wait
        self.lease = timedelta(seconds=lease)
        self._last_sweep = 0.0

    async def run(
        self,
        *,
        project_id: str,
        user_id: str,
        key: str,
        request_hash: str,
        work: Callable[[], Awaitable[dict[str, Any]]],
        base_url: str = "",
    ) -> dict[str, Any]:
        """`work()`'s answer, computed at most once per key while the key lives."""
        await self._maybe_sweep()
        pk = _Key(project_id, user_id, key)
        owner, stored = await self._claim(pk, request_hash)
        if owner is None:
            return await self._rehydrate(project_id, stored, base_url)
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

    async def _claim(self, pk: _Key, request_hash: str) -> tuple[str | None, Any]:
        """(our owner token, None) once we hold the key, or (None, stored answer)."""
        deadline = time.monotonic() + self.wait
        delay = 0.02
        insert = True
        vanished = 0  # INSERT refused, yet no row: a race, or (repeated) a bug
        while True:
            now = _now()
            owner = uuid.uuid4().hex
            if insert and await self._insert(pk, request_hash, owner, now):
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

    async def _insert(self, pk: _Key, request_hash: str, owner: str, now: datetime) -> bool:
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
                        expires_at=now + self.ttl,
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

    async def _complete(self, pk: _Key, owner: str, result: dict[str, Any]) -> None:
        try:
            async with self.engine.begin() as conn:
                await conn.execute(
                    keys.update()
                    .where(pk.where(), keys.c.owner == owner)
                    .values(state="done", owner=None, lease_until=None, response=_compact(result))
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

    async def _rehydrate(self, project_id: str, stored: Any, base_url: str) -> dict[str, Any]:
        """A stored answer as first sent: base64 images are read back from the file store."""
        result: dict[str, Any] = dict(stored)
        data = (result.get("response") or {}).get("data")
        if not isinstance(data, list):
            return result
        items = []
        for item in data:
            digest = (item.get("content") or {}).get("digest")
            if "b64_json" in item and item["b64_json"] is None and digest:
                image = await self.files.get(project_id, digest)
                if image is None:
                    raise ImagegateError(f"stored image {digest} of a replayed answer is missing")
                item = {**item, "b64_json": base64.b64encode(image).decode()}
            if "url" in item and digest and self.url_for is not None:
                mimetype = (item.get("content") or {}).get("mimetype") or "image/png"
                item = {**item, "url": self.url_for(base_url, project_id, digest, mimetype)}
            items.append(item)
        result["response"] = {**result["response"], "data": items}
        return result


def _compact(result: dict[str, Any]) -> dict[str, Any]:
    """The answer as stored: base64 of an image the file store keeps becomes null (the
    digest finds it again), so a row does not carry megabytes of base64."""
    response = result.get("response")
    if not result.get("weave_call_id") or not isinstance(response, dict):
        return result  # untracked: the images exist nowhere else
    data = response.get("data")
    if not isinstance(data, list):
        return result
    compacted = []
    for item in data:
        if item.get("b64_json") and (item.get("content") or {}).get("digest"):
            item = {**item, "b64_json": None}
        if item.get("url") and (item.get("content") or {}).get("digest"):
            item = {
                **item,
                "url": None,
            }  # made anew on replay: its host and expiry were the first request's
        compacted.append(item)
    return {**result, "response": {**response, "data": compacted}}
