"""Busy is not down: while every pooled database connection is in use, requests wait in
a bounded queue of the pool's own; only past its bound do they get a 503 (with
Retry-After), at once rather than after the wait."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import httpx
import pytest
from fastapi import FastAPI

from imagegate.app import create_app
from imagegate.config import Settings
from imagegate.core import Imagegate
from imagegate.store.db import WaitingPool
from tests.conftest import basic

MAX_WAITERS = 3


@pytest.fixture
async def small_queue_app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(dataclasses.replace(settings, database_max_waiters=MAX_WAITERS))
    async with application.router.lifespan_context(application):
        yield application


async def test_requests_wait_for_a_busy_pool_and_only_past_its_queue_get_503(
    small_queue_app: FastAPI,
) -> None:
    ig: Imagegate = small_queue_app.state.imagegate
    keys = [await ig.accounts.create_key(f"user{i}") for i in range(MAX_WAITERS + 1)]
    pool = ig.engine.sync_engine.pool
    assert isinstance(pool, WaitingPool)
    transport = httpx.ASGITransport(app=small_queue_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=60) as client:
        async with AsyncExitStack() as held:
            # Another part of the server holds every connection the pool may open.
            for _ in range(pool.size() + pool._max_overflow):
                await held.enter_async_context(ig.engine.connect())
            # Keys not seen before: authenticating them needs the database.
            waiting = [
                asyncio.create_task(read_as(client, keys[i], f"user{i}"))
                for i in range(MAX_WAITERS)
            ]
            while pool.waiting < MAX_WAITERS:
                await asyncio.sleep(0.01)
            assert not any(task.done() for task in waiting)
            refused = await read_as(client, keys[-1], f"user{MAX_WAITERS}")
            assert refused.status_code == 503
            assert refused.headers["retry-after"]
            assert "busy" in refused.json()["detail"]
        # The connections are back: everyone who waited is served.
        answers = await asyncio.gather(*waiting)
        assert [a.status_code for a in answers] == [200] * MAX_WAITERS


async def read_as(client: httpx.AsyncClient, key: str, user: str) -> httpx.Response:
    return await client.post(
        "/calls/query_stats", json={"project_id": f"{user}/p"}, headers=basic(key)
    )
