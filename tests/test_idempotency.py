"""Idempotency-Key / X-Weave-Retry-Id: a retried /image/create is generated at most once.

A generation still running is one held at the fake OpenAI server's gate: the test sees
the provider request arrive, checks what it needs while it is held, then opens the gate.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from imagegate.config import Settings
from imagegate.core import Imagegate
from imagegate.store.tables import idempotency_keys
from tests.conftest import Users, basic
from tests.fake_openai import FakeOpenAI, Gate, Reply


def catalog(fake: FakeOpenAI) -> str:
    return f"""
[models."test/gated"]
provider = "openai"
upstream_model = "gated"
base_url = "{fake.url}/v1"
size_range = [256, 2048]
params = ["size", "response_format"]
max_attempts = 1
"""


@pytest.fixture
def settings(
    settings: Settings, tmp_path: Path, fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    fake.reset()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-idempotency-0123456789")
    models = tmp_path / "models.toml"
    models.write_text(catalog(fake))
    return replace(settings, models_file=models)


@pytest.fixture
def gate(fake: FakeOpenAI, settings: Settings) -> Gate:
    """Holds the next provider request (and only that one) until opened. (After
    `settings`, which resets the fake.)"""
    gate = Gate()
    fake.push(Reply(gate=gate))
    return gate


class Arrivals:
    """The app, wrapped to note when each request reaches it (server-side evidence)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.at: list[float] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/image/create":
            self.at.append(time.monotonic())
        await self.app(scope, receive, send)


def count_claims(imagegate: Imagegate) -> list[float]:
    """When each INSERT into idempotency_keys (a claim of a key) was sent to the database."""
    claims: list[float] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO IDEMPOTENCY_KEYS"):
            claims.append(time.monotonic())

    sa.event.listen(imagegate.engine.sync_engine, "before_cursor_execute", seen)
    return claims


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


async def until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        await asyncio.sleep(0.01)


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
    app: Any, users: Users, gate: Gate, fake: FakeOpenAI, imagegate: Imagegate
) -> None:
    imagegate.idempotency.wait = 60  # far longer than the test: the repeat must not give up
    arrivals = Arrivals(app)
    claims = count_claims(imagegate)
    transport = httpx.ASGITransport(app=arrivals)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        first = asyncio.create_task(create(client, users.alice, body(model="test/gated")))
        await gate.until_held()  # the first is at the provider, and stays there
        second = asyncio.create_task(create(client, users.alice, body(model="test/gated")))
        # The repeat is inside the server and has tried to claim the key (and been
        # refused): two claims, while the first is still held.
        await until(lambda: len(arrivals.at) == 2 and len(claims) == 2, "the repeat's claim")
        row = await stored_row(imagegate)
        assert row.state == "running" and row.owner, row
        await asyncio.sleep(0.5)  # a repeat that did not wait would have answered by now
        assert not first.done() and not second.done()
        assert gate.waiting == 1 and len(fake.requests) == 1
        opened_at = time.monotonic()
        gate.open()
        a, b = await asyncio.gather(first, second)
        answered_at = time.monotonic()
        assert await count(client, users.alice) == 1
    assert a.status_code == b.status_code == 200, (a.text, b.text)
    assert a.json() == b.json()
    assert len(fake.requests) == 1  # one generation at the provider
    print(
        f"RACE test_repeat_while_running_waits_for_the_first: first held at the provider; "
        f"repeat reached the app {opened_at - arrivals.at[1]:.3f}s and was refused the key "
        f"{opened_at - claims[1]:.3f}s before the gate opened; key state {row.state!r} "
        f"meanwhile; both answered {answered_at - opened_at:.3f}s after it opened; "
        f"provider requests: {len(fake.requests)}"
    )


async def test_repeat_past_the_wait_gets_409_then_the_answer(
    client, users: Users, gate: Gate, fake: FakeOpenAI, imagegate: Imagegate
) -> None:
    imagegate.idempotency.wait = 0.2  # the first never finishes on its own: the gate is shut
    first = asyncio.create_task(create(client, users.alice, body(model="test/gated")))
    await gate.until_held()
    busy = await create(client, users.alice, body(model="test/gated"))
    assert busy.status_code == 409
    assert int(busy.headers["retry-after"]) >= 1
    assert "still in progress" in busy.json()["detail"]
    # A different body is refused even while the first still runs.
    assert (await create(client, users.alice, body("other", model="test/gated"))).status_code == 422
    state = (await stored_row(imagegate)).state
    assert state == "running" and not first.done()
    gate.open()
    done = await first
    assert done.status_code == 200
    later = await create(client, users.alice, body(model="test/gated"))
    assert later.json() == done.json()
    assert len(fake.requests) == 1
    print(
        f"RACE test_repeat_past_the_wait_gets_409_then_the_answer: first held at the "
        f"provider (key {state!r}); the repeat got 409 Retry-After "
        f"{busy.headers['retry-after']} while it was held; after the gate opened the "
        f"first answered 200 and a later repeat replayed it; provider requests: 1"
    )


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
