"""Rate limits per key and per project, shared by replicas through the database."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import httpx
import pytest

from imagegate.config import Settings
from tests.conftest import Users, basic


async def clear_of_minute_boundary() -> None:
    """Limits count per clock minute: start a test well inside one, so all its
    requests fall in the same window whatever the time."""
    into = time.time() % 60
    if into > 45:
        await asyncio.sleep(61 - into)


async def create(client: httpx.AsyncClient, key: str, project: str, n: int = 1) -> httpx.Response:
    return await client.post(
        "/image/create",
        json={
            "project_id": project,
            "inputs": {
                "model": "local/procedural",
                "prompt": "a teal owl",
                "size": "256x256",
                "n": n,
            },
        },
        headers=basic(key),
    )


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return replace(settings, rate_limit_key_requests=3, rate_limit_project_images=5)


async def test_key_and_project_limits_answer_429_with_retry_after(
    client: httpx.AsyncClient, users: Users
) -> None:
    await clear_of_minute_boundary()
    for _ in range(3):
        assert (await create(client, users.alice, "alice/a")).status_code == 200
    refused = await create(client, users.alice, "alice/b")
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    body = refused.json()
    assert body["error_type"] == "rate_limited"
    assert body["limit"] == {"scope": "key", "kind": "requests", "per_minute": 3}
    # Another key is counted on its own; the project's image budget is shared.
    assert (await create(client, users.bob, "acme/p", n=4)).status_code == 200
    over = await create(client, users.bob, "acme/p", n=2)
    assert over.status_code == 429
    assert over.json()["limit"] == {"scope": "project", "kind": "images", "per_minute": 5}
    assert (await create(client, users.bob, "acme/p", n=1)).status_code == 200
    metrics = (await client.get("/metrics")).text
    assert 'imagegate_rate_limit_per_minute{kind="requests",scope="key"} 3.0' in metrics
    assert 'imagegate_rate_limit_per_minute{kind="images",scope="project"} 5.0' in metrics
    assert 'imagegate_rate_limited_total{kind="requests",scope="key"} 1.0' in metrics
    assert 'imagegate_rate_limited_total{kind="images",scope="project"} 1.0' in metrics


async def test_replicas_share_one_count(replicas: list[httpx.AsyncClient]) -> None:
    app = replicas[0]._transport.app  # type: ignore[attr-defined]
    key = await app.state.imagegate.accounts.create_key("zed")
    await clear_of_minute_boundary()
    answers = await asyncio.gather(*(create(replicas[i % 2], key, "zed/x") for i in range(10)))
    assert sorted(a.status_code for a in answers) == [200] * 3 + [429] * 7
