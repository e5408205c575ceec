"""Reading calls back: /call/read, /calls/stream_query and /calls/query_stats over HTTP."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.conftest import Users, basic

PROJECT = "acme/gallery"


async def generate(client: httpx.AsyncClient, key: str, prompt: str, **inputs: Any) -> str:
    res = await client.post(
        "/image/create",
        json={
            "project_id": PROJECT,
            "inputs": {"model": "local/procedural", "prompt": prompt, "size": "256x256", **inputs},
        },
        headers=basic(key),
    )
    assert res.status_code == 200, res.text
    return str(res.json()["weave_call_id"])


async def stream(client: httpx.AsyncClient, key: str, **req: Any) -> list[dict[str, Any]]:
    res = await client.post(
        "/calls/stream_query", json={"project_id": PROJECT, **req}, headers=basic(key)
    )
    assert res.status_code == 200, res.text
    assert res.headers["content-type"].startswith("application/jsonl")
    return [json.loads(line) for line in res.text.splitlines()]


@pytest.fixture
async def calls(client, users: Users, imagegate) -> dict[str, Any]:
    """Five calls by two users, oldest first."""
    ids = [
        await generate(client, users.alice, "a red fox", n=1),
        await generate(client, users.alice, "a BLUE whale", n=2),
        await generate(client, users.bob, "green hills 100% real", n=3),
        await generate(client, users.bob, "a red barn", n=1),
        await generate(client, users.alice, "purple_rain", n=2),
    ]
    alice = await imagegate.accounts.authenticate(users.alice)
    bob = await imagegate.accounts.authenticate(users.bob)
    return {"ids": ids, "alice": alice.user_id, "bob": bob.user_id}


async def test_default_order_is_oldest_first(client, users, calls) -> None:
    got = await stream(client, users.alice)
    assert [c["id"] for c in got] == calls["ids"]
    assert all(c["op_name"] == "weave.image_generation_create" for c in got)


async def test_sort_limit_offset(client, users, calls) -> None:
    got = await stream(
        client,
        users.alice,
        sort_by=[{"field": "started_at", "direction": "desc"}],
        limit=2,
        offset=1,
    )
    assert [c["id"] for c in got] == calls["ids"][::-1][1:3]
    by_prompt = await stream(
        client, users.alice, sort_by=[{"field": "inputs.prompt", "direction": "asc"}]
    )
    prompts = [c["inputs"]["prompt"] for c in by_prompt]
    assert prompts == sorted(prompts)


async def test_filters(client, users, calls) -> None:
    ids = calls["ids"]
    assert [
        c["id"] for c in await stream(client, users.alice, filter={"call_ids": ids[1:3]})
    ] == ids[1:3]
    by_bob = await stream(client, users.alice, filter={"wb_user_ids": [calls["bob"]]})
    assert [c["id"] for c in by_bob] == ids[2:4]
    by_op = await stream(
        client, users.alice, filter={"op_names": ["weave.image_generation_create"]}
    )
    assert len(by_op) == 5
    assert await stream(client, users.alice, filter={"op_names": ["other.op"]}) == []
    roots = await stream(client, users.alice, filter={"trace_roots_only": True})
    assert len(roots) == 5


def expr(e: dict[str, Any]) -> dict[str, Any]:
    return {"$expr": e}


def field(path: str) -> dict[str, str]:
    return {"$getField": path}


def lit(value: Any) -> dict[str, Any]:
    return {"$literal": value}


async def test_query_operators(client, users, calls) -> None:
    ids = calls["ids"]

    async def q(e: dict[str, Any]) -> list[str]:
        return [c["id"] for c in await stream(client, users.alice, query=expr(e))]

    assert await q({"$eq": [field("inputs.n"), lit(2)]}) == [ids[1], ids[4]]
    assert await q({"$gt": [field("inputs.n"), lit(1)]}) == [ids[1], ids[2], ids[4]]
    assert await q({"$gte": [field("inputs.n"), lit(2)]}) == [ids[1], ids[2], ids[4]]
    assert await q({"$contains": {"input": field("inputs.prompt"), "substr": lit("red")}}) == [
        ids[0],
        ids[3],
    ]
    assert await q(
        {
            "$contains": {
                "input": field("inputs.prompt"),
                "substr": lit("blue"),
                "case_insensitive": True,
            }
        }
    ) == [ids[1]]
    # LIKE wildcards in the text match literally.
    assert await q({"$contains": {"input": field("inputs.prompt"), "substr": lit("100%")}}) == [
        ids[2]
    ]
    assert await q({"$contains": {"input": field("inputs.prompt"), "substr": lit("e_r")}}) == [
        ids[4]
    ]
    assert await q({"$in": [field("wb_user_id"), [lit(calls["bob"])]]}) == ids[2:4]
    assert await q(
        {
            "$and": [
                {"$eq": [field("wb_user_id"), lit(calls["alice"])]},
                {
                    "$or": [
                        {"$eq": [field("inputs.n"), lit(1)]},
                        {"$gt": [field("inputs.n"), lit(1)]},
                    ]
                },
                {
                    "$not": [
                        {"$contains": {"input": field("inputs.prompt"), "substr": lit("whale")}}
                    ]
                },
            ]
        }
    ) == [ids[0], ids[4]]
    assert await q({"$eq": [field("summary.weave.status"), lit("success")]}) == ids
    assert await q({"$eq": [field("summary.weave.status"), lit("error")]}) == []
    cutoff = (await stream(client, users.alice, filter={"call_ids": [ids[2]]}))[0]["started_at"]
    assert await q({"$gte": [field("started_at"), lit(cutoff)]}) == ids[2:]


@pytest.mark.parametrize(
    "query",
    [
        {"$expr": {"$bogus": []}},
        {"$expr": {"$eq": [{"$getField": "no_such_column"}, {"$literal": 1}]}},
        {"$expr": {"$eq": [{"$getField": "inputs.n"}]}},
        {"$expr": {"$gt": [{"$getField": "started_at"}, {"$literal": "yesterday"}]}},
    ],
)
async def test_bad_query_is_400_with_reason(client, users, query) -> None:
    res = await client.post(
        "/calls/stream_query",
        json={"project_id": PROJECT, "query": query},
        headers=basic(users.alice),
    )
    assert res.status_code == 400
    assert res.json()["detail"]


async def test_query_stats(client, users, calls) -> None:
    async def stats(**req: Any) -> dict[str, Any]:
        res = await client.post(
            "/calls/query_stats", json={"project_id": PROJECT, **req}, headers=basic(users.bob)
        )
        assert res.status_code == 200
        return res.json()

    assert (await stats())["count"] == 5
    assert (await stats(filter={"wb_user_ids": [calls["alice"]]}))["count"] == 3
    assert (await stats(query=expr({"$eq": [field("inputs.n"), lit(2)]})))["count"] == 2
    limited = await stats(limit=2)
    assert limited["count"] == 2 and limited["has_more"] is True
    assert (await stats(limit=10))["has_more"] is False


async def test_columns_trim_the_payload(client, users, calls) -> None:
    got = await stream(client, users.alice, columns=["inputs"], limit=1)
    assert set(got[0]) == {"id", "project_id", "op_name", "trace_id", "started_at", "inputs"}


async def test_call_read_unknown_id_is_null(client, users, calls) -> None:
    res = await client.post(
        "/call/read", json={"project_id": PROJECT, "id": "0190-nope"}, headers=basic(users.alice)
    )
    assert res.status_code == 200 and res.json() == {"call": None}
