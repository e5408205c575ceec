"""Finding 2: a query's size is capped with a clear 400, before it can block the event
loop, fill the compiled-statement cache or reach the database's own depth limit."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
from fastapi import FastAPI

from tests.conftest import LiveServer, Users, basic


def eq(i: int) -> dict[str, Any]:
    return {"$eq": [{"$getField": "inputs.model"}, {"$literal": f"model-{i}"}]}


def test_998_term_or_is_400_and_logged_briefly(live_server: LiveServer) -> None:
    body = {"project_id": "admin/q", "query": {"$expr": {"$or": [eq(i) for i in range(998)]}}}
    lines_before = len(live_server.output)
    res = httpx.post(
        f"{live_server.url}/calls/stream_query",
        json=body,
        auth=("api", live_server.admin_key),
        timeout=30,
    )
    assert res.status_code == 400, res.text[:300]
    assert "terms" in res.json()["detail"]
    assert "retry-after" not in res.headers
    time.sleep(0.5)  # the server's output is read by a thread
    assert all(len(line) < 2000 for line in live_server.output[lines_before:])


def test_huge_query_is_refused_without_stalling_health(live_server: LiveServer) -> None:
    # 3.35 MB: $or of 6 x $and of 10,000 $eq.
    big = {"$or": [{"$and": [eq(i) for i in range(10_000)]} for _ in range(6)]}
    health: list[float] = []
    done = threading.Event()

    def probe() -> None:
        while not done.is_set():
            started = time.monotonic()
            httpx.get(f"{live_server.url}/health", timeout=30)
            health.append(time.monotonic() - started)
            time.sleep(0.02)

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        res = httpx.post(
            f"{live_server.url}/calls/stream_query",
            json={"project_id": "admin/q", "query": {"$expr": big}},
            auth=("api", live_server.admin_key),
            timeout=60,
        )
    finally:
        done.set()
        prober.join()
    assert res.status_code == 400, res.text[:300]
    assert max(health) < 3.0, max(health)  # it was 9 s; the margin is for a busy machine


async def test_distinct_query_shapes_do_not_fill_the_compiled_cache(
    app: FastAPI, client: httpx.AsyncClient, users: Users
) -> None:
    engine = app.state.imagegate.engine.sync_engine
    cache = engine._compiled_cache  # SQLAlchemy's engine-wide LRU of compiled statements
    await client.post(
        "/calls/stream_query", json={"project_id": "alice/p"}, headers=basic(users.alice)
    )
    before = len(cache)
    for n in range(1, 41):  # 40 shapes: $or of 1, 2, ... 40 terms
        for path in ("/calls/stream_query", "/calls/query_stats"):
            body = {"project_id": "alice/p", "query": {"$expr": {"$or": [eq(i) for i in range(n)]}}}
            res = await client.post(path, json=body, headers=basic(users.alice))
            assert res.status_code == 200, res.text
    assert len(cache) - before < 5
