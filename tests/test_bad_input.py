"""Bad input: a clear error with the right status, and nothing stored."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from imagegate.config import Settings
from tests.backends import stored_files
from tests.conftest import Users, basic

GOOD = {"model": "local/procedural", "prompt": "a red fox"}


async def assert_nothing_stored(client: httpx.AsyncClient, key: str, settings: Settings) -> None:
    stats = await client.post(
        "/calls/query_stats", json={"project_id": "alice/demo"}, headers=basic(key)
    )
    assert stats.json()["count"] == 0
    assert await stored_files(settings) == {}


@pytest.mark.parametrize(
    ("inputs", "field", "message"),
    [
        ({"model": "local/procedural"}, "prompt", "Field required"),
        ({**GOOD, "prompt": ""}, "prompt", "must not be empty"),
        ({**GOOD, "prompt": "   \n"}, "prompt", "must not be empty"),
        ({**GOOD, "prompt": "x" * 32001}, "prompt", "at most 32000"),
        ({**GOOD, "n": 0}, "n", "between 1 and 10"),
        ({**GOOD, "n": 11}, "n", "between 1 and 10"),
        ({**GOOD, "n": -1}, "n", "between 1 and 10"),
        ({**GOOD, "n": "2"}, "n", "valid integer"),
        ({**GOOD, "n": 2.5}, "n", "valid integer"),
        ({**GOOD, "n": True}, "n", "valid integer"),
        ({**GOOD, "size": "big"}, "size", "WIDTHxHEIGHT"),
        ({**GOOD, "size": "1024x"}, "size", "WIDTHxHEIGHT"),
        ({**GOOD, "size": "100x1024"}, "size", "between 256 and 2048"),
        ({**GOOD, "size": "4096x4096"}, "size", "between 256 and 2048"),
        ({**GOOD, "size": 1024}, "size", "valid string"),
        ({**GOOD, "seed": -5}, "seed", "greater than or equal to 0"),
        ({**GOOD, "response_format": "gif"}, "response_format", "'b64_json' or 'url'"),
        ({**GOOD, "model": "nope/nothing"}, "model", "available models: "),
        ({"prompt": "x"}, "model", "Field required"),
    ],
)
async def test_bad_inputs_get_422_and_store_nothing(
    client: httpx.AsyncClient,
    users: Users,
    settings: Any,
    inputs: dict[str, Any],
    field: str,
    message: str,
) -> None:
    res = await client.post(
        "/image/create",
        json={"project_id": "alice/demo", "inputs": inputs},
        headers=basic(users.alice),
    )
    assert res.status_code == 422, res.text
    detail = res.json()["detail"]
    assert any(d["loc"][-1] == field and message in d["msg"] for d in detail), detail
    assert all({"loc", "msg", "type"} <= set(d) for d in detail)
    await assert_nothing_stored(client, users.alice, settings)


@pytest.mark.parametrize(
    "project_id",
    [
        "alice",
        "alice/",
        "/demo",
        "alice/demo/extra",
        "../x",
        "alice/..",
        "alice/../bob",
        "a/b/c",
        "",
        "alice/de mo",
        "alice/.hidden",
        "alice\\demo",
        "alice/" + "p" * 65,
    ],
)
async def test_malformed_project_id_is_422(client, users: Users, settings, project_id: str) -> None:
    res = await client.post(
        "/image/create",
        json={"project_id": project_id, "inputs": GOOD},
        headers=basic(users.alice),
    )
    assert res.status_code == 422, res.text
    assert res.json()["detail"][0]["loc"] == ["body", "project_id"]
    await assert_nothing_stored(client, users.alice, settings)


@pytest.mark.parametrize(
    "content", [b"not json", b"{", b"[1, 2]", b'"text"', b"", b'{"project_id": "alice/demo"}']
)
async def test_body_that_is_not_a_request_is_422(client, users: Users, settings, content: bytes):
    res = await client.post(
        "/image/create",
        content=content,
        headers={**basic(users.alice), "Content-Type": "application/json"},
    )
    assert res.status_code == 422, res.text
    assert isinstance(res.json()["detail"], list)
    await assert_nothing_stored(client, users.alice, settings)


class CountingBody:
    """A 20 MiB request body handed over in 64 KiB chunks, counting what the server pulls."""

    def __init__(self, size: int = 20 * 1024 * 1024, chunk: int = 65536) -> None:
        self.size, self.chunk, self.pulled = size, chunk, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while self.pulled < self.size:
            self.pulled += self.chunk
            yield b" " * self.chunk


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
async def test_oversized_body_is_refused_before_it_is_read(
    client, users: Users, settings, declared: bool
) -> None:
    body = CountingBody()
    headers = {**basic(users.alice), "Content-Type": "application/json"}
    if declared:
        headers["Content-Length"] = str(body.size)
    res = await client.post("/image/create", content=body, headers=headers)
    assert res.status_code == 413
    assert "larger than the limit" in res.json()["detail"]
    # Declared: refused on the header, before the first chunk. Streamed: cut off at the
    # chunk that crosses the limit, never the whole 20 MiB.
    read_at_most = 0 if declared else settings.max_request_bytes + body.chunk
    assert body.pulled <= read_at_most, body.pulled
    await assert_nothing_stored(client, users.alice, settings)


@pytest.mark.parametrize(
    "digest", ["short", "x" * 44, "../../../../etc/passwd" + "a" * 21, "a" * 42 + "!"]
)
async def test_malformed_digest_is_422(client, users: Users, digest: str) -> None:
    res = await client.post(
        "/file/content",
        json={"project_id": "alice/demo", "digest": digest},
        headers=basic(users.alice),
    )
    assert res.status_code == 422, res.text
    assert res.json()["detail"][0]["loc"] == ["body", "digest"]
