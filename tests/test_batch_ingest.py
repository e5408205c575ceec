"""Bulk ingest through the batch API (issue 15's load path), on every backend: a batch
larger than one SQLite statement holds, duplicates within and across batches, the
prompt index and the rollups kept right, JSON values stored exactly, bad bodies refused
as before, and SQLite batch writers taking turns at its one writer."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import random
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url

from imagegate.store.call_writes import SQLITE_MAX_VARIABLES
from imagegate.store.spend import _figures, _from_calls, call_counts
from tests.conftest import Users, basic
from tests.test_call_rollups import _flat

PROJECT = "acme/bulk"
PATH = "/v2/acme/bulk/calls/complete"
MODELS = ("gpt-image-1", "dall-e-3", "local/procedural")
T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


def _call(rng: random.Random, i: int, prompt: str | None = None) -> dict[str, Any]:
    call_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    started = T0 + timedelta(seconds=i * 37)
    model = rng.choice(MODELS)
    cost = None if model == "local/procedural" else round(rng.random(), 4)
    failed = i % 29 == 0
    return {
        "id": call_id,
        "trace_id": call_id,
        "project_id": PROJECT,
        "op_name": "imagegate.image.create",
        "started_at": started.isoformat(),
        "ended_at": (started + timedelta(seconds=3)).isoformat(),
        "attributes": {},
        "inputs": {"model": model, "prompt": prompt or f"a red fox number {i}"},
        "output": None if failed else {"data": [{"n": i}]},
        "summary": {"costs": {model: {"images": 0 if failed else 1, "total_cost": cost}}},
        "exception": "provider_error: boom" if failed else None,
    }


async def _stream(client: httpx.AsyncClient, key: str, **req: Any) -> list[dict[str, Any]]:
    res = await client.post(
        "/calls/stream_query", json={"project_id": PROJECT, **req}, headers=basic(key)
    )
    assert res.status_code == 200, res.text
    return [json.loads(line) for line in res.text.splitlines()]


async def test_a_large_batch_is_stored_once_with_its_prompt_index_and_rollups(
    client: httpx.AsyncClient, users: Users, imagegate: Any
) -> None:
    rng = random.Random(15)
    per_statement = SQLITE_MAX_VARIABLES // 17  # columns of a whole call
    count = per_statement + 200  # spans two SQLite statements
    marked = {10, per_statement - 1, per_statement + 5, count - 1}
    made = [_call(rng, i, "heliotrope owl" if i in marked else None) for i in range(count)]
    # The same id twice in one batch, once in each statement: the first is kept.
    made.append({**made[3], "inputs": {"model": "dall-e-3", "prompt": "a later copy"}})
    res = await client.post(PATH, json={"batch": made}, headers=basic(users.alice))
    assert res.status_code == 200, res.text
    # A retried, overlapping batch: only the new calls are stored.
    more = [_call(rng, count + i) for i in range(50)]
    retry = made[1000:1100] + more
    res = await client.post(PATH, json={"batch": retry}, headers=basic(users.alice))
    assert res.status_code == 200, res.text

    stored = await _stream(client, users.alice, columns=["id", "inputs"])
    expected = [c["id"] for c in made[:count] + more]
    assert sorted(c["id"] for c in stored) == sorted(expected)
    first = next(c for c in stored if c["id"] == made[3]["id"])
    assert first["inputs"]["prompt"] == made[3]["inputs"]["prompt"]

    contains = {"$contains": {"input": {"$getField": "inputs.prompt"},
                "substr": {"$literal": "HELIOTROPE"}, "case_insensitive": True}}  # fmt: skip
    found = await _stream(client, users.alice, query={"$expr": contains}, columns=["id"])
    assert sorted(c["id"] for c in found) == sorted(made[i]["id"] for i in marked)

    async with imagegate.engine.connect() as conn:
        rolled = await _figures(conn, [PROJECT], None, None)
        summed = await _from_calls(conn, [PROJECT], None, None)
        assert _flat(rolled) == pytest.approx(_flat(summed))
        assert (await call_counts(conn, [PROJECT]))[PROJECT][0] == len(expected)
    errors = sum(1 for c in made[:count] + more if c["exception"])
    res = await client.post(
        "/calls/query_stats",
        json={"project_id": PROJECT, "query": {"$expr": {"$eq": [
            {"$getField": "summary.weave.status"}, {"$literal": "error"}]}}},
        headers=basic(users.alice),
    )  # fmt: skip
    assert res.status_code == 200 and res.json()["count"] == errors


async def test_json_values_are_stored_as_sent(client: httpx.AsyncClient, users: Users) -> None:
    call = _call(random.Random(1), 1)
    call["inputs"] = {"prompt": 'é ✓ "q" \\ \t', "big": 10**30, "small": 1e-7, "x": [1, 2.5]}
    call["output"] = [None, True, {"nested": {"deep": "ok"}}]
    call["attributes"] = {"weave": {"client_version": "0.54"}}
    res = await client.post(PATH, json={"batch": [call]}, headers=basic(users.alice))
    assert res.status_code == 200, res.text
    [stored] = await _stream(client, users.alice)
    assert stored["inputs"] == call["inputs"]
    assert stored["output"] == call["output"]
    assert stored["attributes"] == call["attributes"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"batch": [', "the body must be JSON"),
        (b'{"batch": []} trailing', "the body must be JSON"),
        (b'{"batch": [{"id": "x"}]}', "Field required"),
    ],
)
async def test_bad_bodies_are_refused_as_before(
    client: httpx.AsyncClient, users: Users, body: bytes, message: str
) -> None:
    headers = {**basic(users.alice), "content-type": "application/json"}
    for path in (PATH, "/call/upsert_batch"):
        res = await client.post(path, content=body, headers=headers)
        assert res.status_code == 422, res.text
        assert message in res.text


async def test_sqlite_batches_wait_their_turn_at_the_writer(
    client: httpx.AsyncClient, users: Users, settings: Any
) -> None:
    url = make_url(settings.resolved_database_url)
    if url.get_backend_name() != "sqlite":
        pytest.skip("PostgreSQL has many writers")
    queue = Path(f"{url.database}-writers")
    call = _call(random.Random(2), 2)
    # Another writer (another worker process) holds the turn.
    fd = os.open(queue, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        sending = asyncio.ensure_future(
            client.post(PATH, json={"batch": [call]}, headers=basic(users.alice))
        )
        await asyncio.sleep(0.5)
        assert not sending.done()
        fcntl.flock(fd, fcntl.LOCK_UN)
        res = await asyncio.wait_for(sending, 10)
        assert res.status_code == 200, res.text
    finally:
        os.close(fd)
    assert [c["id"] for c in await _stream(client, users.alice)] == [call["id"]]
