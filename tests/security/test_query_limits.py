"""Finding 2: a query's size is capped with a clear 400, before it can block the event
loop, fill the compiled-statement cache or reach the database's own depth limit."""

from __future__ import annotations

import sys
import threading
import time
from types import FrameType
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from sqlalchemy.sql.compiler import Compiled

from imagegate.store.feedback import FEEDBACK
from imagegate.store.query import calls_where
from imagegate.store.tables import calls
from tests.conftest import LiveServer, Users, basic


def eq(i: int | str, field: str = "inputs.model") -> dict[str, Any]:
    return {"$eq": [{"$getField": field}, {"$literal": i if isinstance(i, str) else f"model-{i}"}]}


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


async def test_distinct_feedback_query_shapes_do_not_fill_the_compiled_cache(
    app: FastAPI, client: httpx.AsyncClient, users: Users
) -> None:
    cache = app.state.imagegate.engine.sync_engine._compiled_cache
    await client.post("/feedback/query", json={"project_id": "alice/p"}, headers=basic(users.alice))
    before = len(cache)
    for n in range(1, 41):
        terms = [eq(i, "feedback_type") for i in range(n)]
        body = {"project_id": "alice/p", "query": {"$expr": {"$or": terms}}}
        res = await client.post("/feedback/query", json=body, headers=basic(users.alice))
        assert res.status_code == 200, res.text
    assert len(cache) - before < 5


# A statement with more bound parameters than this is a caller's large query, never one
# of the service's own (the largest, a `calls` row, has fewer than 20).
LARGE = 60


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/calls/stream_query", "inputs.model"),
        ("/calls/query_stats", "inputs.model"),
        ("/feedback/query", "feedback_type"),
    ],
)
async def test_a_large_query_is_compiled_off_the_event_loop(
    app: FastAPI, client: httpx.AsyncClient, users: Users, path: str, field: str
) -> None:
    """Structurally, not by timing: every statement compiled on the event loop's thread
    while the request runs is recorded, and none of them is the large query."""
    made = await client.post(
        "/image/create",
        json={
            "project_id": "alice/q",
            "inputs": {"model": "local/procedural", "prompt": "x", "size": "256x256"},
        },
        headers=basic(users.alice),
    )
    assert made.status_code == 200, made.text
    # 99 comparisons of 3 terms each: just under the cap of 300 terms.
    terms = [eq(i, field) for i in range(98)] + [eq("local/procedural", field)]
    query = {"$expr": {"$or": terms}}
    # The threshold means something: this query compiles to more parameters than it.
    where = FEEDBACK.expression(query) if field == "feedback_type" else calls_where("", None, query)
    assert len(sa.select(calls.c.id).where(where).compile().binds) > LARGE

    compiled_on_loop: list[int] = []

    def profile(frame: FrameType, event: str, _arg: Any) -> None:
        if event == "return" and frame.f_code is Compiled.__init__.__code__:
            compiled_on_loop.append(len(getattr(frame.f_locals.get("self"), "binds", ())))

    sys.setprofile(profile)  # this thread only: the one running the event loop
    try:
        res = await client.post(
            path, json={"project_id": "alice/q", "query": query}, headers=basic(users.alice)
        )
    finally:
        sys.setprofile(None)
    assert res.status_code == 200, res.text
    if path == "/calls/stream_query":
        assert len(res.text.splitlines()) == 1  # the query ran, and found the one call
    elif path == "/calls/query_stats":
        assert res.json()["count"] == 1
    assert all(binds < LARGE for binds in compiled_on_loop), compiled_on_loop


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/calls/stream_query", "inputs.model"),
        ("/feedback/query", "feedback_type"),
        ("/objs/query", "object_id"),
    ],
)
async def test_a_long_sort_by_is_refused_like_a_large_query(
    client: httpx.AsyncClient, users: Users, path: str, field: str
) -> None:
    """Each sort field costs what a query term does: 10,000 took 1.6 s to build and
    compile, and each length was a new statement shape. 32 are plenty."""
    sort_by = [{"field": field, "direction": "asc"}] * 1000
    res = await client.post(
        path, json={"project_id": "alice/s", "sort_by": sort_by}, headers=basic(users.alice)
    )
    assert res.status_code == 400, res.text[:300]
    assert res.json()["detail"] == "sort_by has 1000 items; at most 32 allowed"
    res = await client.post(
        path, json={"project_id": "alice/s", "sort_by": sort_by[:32]}, headers=basic(users.alice)
    )
    assert res.status_code == 200, res.text[:300]
