"""Idempotency-Key / X-Weave-Retry-Id: a retried /image/create is generated at most once."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from imagegate.config import Settings
from imagegate.core import Imagegate
from imagegate.providers.local import ProceduralProvider
from imagegate.store.tables import idempotency_keys
from tests.conftest import Users, basic

CATALOG = """
[models."test/gated"]
provider = "gated"
size_range = [256, 2048]
params = ["size", "seed", "response_format"]
"""


class GatedProvider:
    """local/procedural behind a gate the test opens: a generation still running."""

    def __init__(self) -> None:
        self.calls = 0
        self.gate = asyncio.Event()
        self.inner = ProceduralProvider()

    async def generate(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        await self.gate.wait()
        return await self.inner.generate(*args, **kwargs)


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    models = tmp_path / "models.toml"
    models.write_text(CATALOG)
    return replace(settings, models_file=models)


@pytest.fixture
def gated() -> GatedProvider:
    return GatedProvider()


@pytest.fixture
def providers(gated: GatedProvider) -> dict[str, Any]:
    return {"gated": gated}


def body(prompt: str = "a red fox", model: str = "local/procedural", **inputs: Any) -> dict:
    return {
        "project_id": "acme/retries",
        "inputs": {"model": model, "prompt": prompt, "size": "256x256", **inputs},
    }


async def create(
    client: httpx.AsyncClient, key: str, payload: dict, header: str = "Idempotency-Key", **kw: Any
) -> httpx.Response:
    headers = {**basic(key), header: kw.pop("idem", "key-1")}
    return await client.post("/image/create", json=payload, headers=headers)


async def count(client: httpx.AsyncClient, key: str, project: str = "acme/retries") -> int:
    res = await client.post("/calls/query_stats", json={"project_id": project}, headers=basic(key))
    return int(res.json()["count"])


async def stored_row(imagegate: Imagegate, key: str = "key-1") -> Any:
    async with imagegate.engine.connect() as conn:
        query = sa.select(idempotency_keys).where(idempotency_keys.c.key == key)
        return (await conn.execute(query)).first()


async def test_repeat_after_completion_replays_the_answer(
    client, users: Users, imagegate: Imagegate
) -> None:
    first = await create(client, users.alice, body(n=2))
    assert first.status_code == 200, first.text
    again = await create(client, users.alice, body(n=2))
    assert again.status_code == 200
    assert again.json() == first.json()  # same call id, same images, byte for byte
    for item in again.json()["response"]["data"]:
        assert item["b64_json"]["files"]["content"] == item["content"]["digest"]
    assert await count(client, users.alice) == 1
    # The kept generation names the images by digest instead of carrying their bytes.
    row = await stored_row(imagegate)
    assert row.state == "done"
    images = row.response["generation"]["images"]
    assert len(images) == 2 and all("data" not in image for image in images)


async def test_weave_retry_id_works_the_same(client, users: Users) -> None:
    first = await create(client, users.alice, body(), header="X-Weave-Retry-Id", idem="r-1")
    again = await create(client, users.alice, body(), header="X-Weave-Retry-Id", idem="r-1")
    assert first.json()["weave_call_id"] == again.json()["weave_call_id"]
    assert await count(client, users.alice) == 1


async def test_keys_are_scoped_per_user_and_project(client, users: Users) -> None:
    alice = await create(client, users.alice, body())
    bob = await create(client, users.bob, body())  # same key, same team project
    other = await create(client, users.alice, {**body(), "project_id": "acme/elsewhere"})
    ids = {r.json()["weave_call_id"] for r in (alice, bob, other)}
    assert len(ids) == 3
    assert await count(client, users.alice) == 2


async def test_url_answers_replay_too(client, users: Users) -> None:
    first = await create(client, users.alice, body(response_format="url"))
    again = await create(client, users.alice, body(response_format="url"))
    assert again.json() == first.json()
    image = await client.get(again.json()["response"]["data"][0]["content"]["url"])
    assert image.status_code == 200


async def test_same_key_with_a_different_body_is_422(client, users: Users) -> None:
    assert (await create(client, users.alice, body())).status_code == 200
    res = await create(client, users.alice, body("a blue whale"))
    assert res.status_code == 422
    assert res.json()["detail"][0]["loc"] == ["header", "idempotency-key"]
    assert "different request body" in res.json()["detail"][0]["msg"]
    assert await count(client, users.alice) == 1


async def test_repeat_while_running_waits_for_the_first(
    client, users: Users, gated: GatedProvider, imagegate: Imagegate
) -> None:
    imagegate.idempotency.wait = 60  # far longer than the test: the repeat must not give up
    first = asyncio.create_task(create(client, users.alice, body(model="test/gated")))
    while gated.calls == 0:
        await asyncio.sleep(0.01)
    # Opened while the repeat is waiting: it gets the first one's answer.
    second = asyncio.create_task(create(client, users.alice, body(model="test/gated")))
    await asyncio.sleep(0.05)
    gated.gate.set()
    a, b = await asyncio.gather(first, second)
    assert a.status_code == b.status_code == 200, (a.text, b.text)
    assert a.json() == b.json()
    assert gated.calls == 1
    assert await count(client, users.alice) == 1


async def test_repeat_past_the_wait_gets_409_then_the_answer(
    client, users: Users, gated: GatedProvider, imagegate: Imagegate
) -> None:
    imagegate.idempotency.wait = 0.2  # the first never finishes on its own: the gate is shut
    first = asyncio.create_task(create(client, users.alice, body(model="test/gated")))
    while gated.calls == 0:
        await asyncio.sleep(0.01)
    busy = await create(client, users.alice, body(model="test/gated"))
    assert busy.status_code == 409
    assert int(busy.headers["retry-after"]) >= 1
    assert "still in progress" in busy.json()["detail"]
    # A different body is refused even while the first still runs.
    assert (await create(client, users.alice, body("other", model="test/gated"))).status_code == 422
    gated.gate.set()
    done = await first
    assert done.status_code == 200
    later = await create(client, users.alice, body(model="test/gated"))
    assert later.json() == done.json()
    assert gated.calls == 1


async def test_refused_request_frees_the_key_for_a_corrected_retry(client, users: Users) -> None:
    bad = await create(client, users.alice, body(size="100x100"))  # refused by the service
    assert bad.status_code == 422
    good = await create(client, users.alice, body())
    assert good.status_code == 200 and good.json()["weave_call_id"]
    assert await count(client, users.alice) == 1


async def test_claim_of_a_crashed_replica_is_taken_over(
    client, users: Users, imagegate: Imagegate
) -> None:
    """A holder that stopped renewing its lease blocks its key only until the lease ends."""
    first = await create(client, users.alice, body())
    call_id = first.json()["weave_call_id"]
    past = datetime.now(UTC) - timedelta(seconds=5)
    async with imagegate.engine.begin() as conn:  # as a replica that died mid-generation
        await conn.execute(
            idempotency_keys.update().values(
                state="running", owner="dead", response=None, lease_until=past
            )
        )
    res = await create(client, users.alice, body())
    assert res.status_code == 200
    assert res.json()["weave_call_id"] != call_id
    assert (await stored_row(imagegate)).state == "done"


async def test_expired_key_generates_again(client, users: Users, imagegate: Imagegate) -> None:
    first = await create(client, users.alice, body())
    async with imagegate.engine.begin() as conn:
        await conn.execute(
            idempotency_keys.update().values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    again = await create(client, users.alice, body())
    assert again.status_code == 200
    assert again.json()["weave_call_id"] != first.json()["weave_call_id"]
    assert await count(client, users.alice) == 2


@pytest.mark.parametrize("value", ["", "   ", "x" * 256, "bad\x01key"])
async def test_malformed_key_is_422(client, users: Users, value: str) -> None:
    res = await create(client, users.alice, body(), idem=value)
    assert res.status_code == 422
    assert res.json()["detail"][0]["loc"] == ["header", "idempotency-key"]
    assert await count(client, users.alice) == 0
