"""Budgets: hard ones refuse before any provider call (402 budget_exceeded), soft ones
warn, reservations keep concurrent requests on several replicas within the limit."""

from __future__ import annotations

import asyncio
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from imagegate.app import create_app
from imagegate.config import Settings
from imagegate.core import Imagegate
from tests.conftest import Users, basic
from tests.fake_openai import FakeOpenAI, Reply

PRICE = 0.1  # USD per image of test/priced, the estimate a reservation holds


def catalog(fake: FakeOpenAI) -> str:
    return f"""
[models."test/priced"]
provider = "openai"
upstream_model = "gpt-image-2"
base_url = "{fake.url}/v1"
max_attempts = 1
params = ["size"]
sizes = ["1024x1024"]
# Estimated per image; billed by tokens when the provider reports usage.
prices = {{ image_output = 100.0, per_image = {{ "-:1024x1024" = {PRICE} }} }}

[models."test/unpriced"]
provider = "openai"
upstream_model = "gpt-image-2"
base_url = "{fake.url}/v1"
max_attempts = 1
params = ["size"]
sizes = ["1024x1024"]
"""


@pytest.fixture
def settings(settings: Settings, tmp_path: Path, fake: FakeOpenAI) -> Settings:
    fake.reset()
    models = tmp_path / "models.toml"
    models.write_text(catalog(fake))
    return replace(
        settings, models_file=models, environ={**os.environ, "OPENAI_API_KEY": "sk-test-key"}
    )


async def create(
    client: httpx.AsyncClient, key: str, model: str = "test/priced", project: str = "acme/posters"
) -> httpx.Response:
    return await client.post(
        "/image/create",
        json={"project_id": project, "inputs": {"model": model, "prompt": "a red fox"}},
        headers=basic(key),
    )


async def set_budget(client: httpx.AsyncClient, key: str, path: str, **body: Any) -> httpx.Response:
    return await client.put(path, json=body, headers=basic(key))


async def test_hard_budget_refuses_before_the_provider_with_budget_exceeded(
    client: httpx.AsyncClient, users: Users, fake: FakeOpenAI, imagegate: Imagegate
) -> None:
    # alice owns her own entity; in acme (made by her first key) she is the owner too.
    res = await set_budget(
        client, users.alice, "/projects/acme/posters/budget", period="daily", limit_usd=0.25
    )
    assert res.status_code == 200, res.text
    assert res.json()["budgets"][0]["limit_usd"] == 0.25
    for _ in range(2):
        ok = await create(client, users.bob)
        assert ok.status_code == 200 and "error" not in ok.json()["response"], ok.text
    asked = len(fake.requests)
    refused = await create(client, users.bob)
    assert refused.status_code == 402
    body = refused.json()
    assert body["error_type"] == "budget_exceeded"
    assert "daily hard budget of $0.25" in body["detail"]
    assert body["budget"]["spent_usd"] == pytest.approx(0.2)
    assert body["budget"]["remaining_usd"] == pytest.approx(0.05)
    assert len(fake.requests) == asked  # no provider call
    calls = await client.post(
        "/calls/query_stats", json={"project_id": "acme/posters"}, headers=basic(users.bob)
    )
    assert calls.json()["count"] == 2  # nothing recorded for the refusal
    status = (await client.get("/projects/acme/posters/budget", headers=basic(users.bob))).json()
    assert status["budgets"][0]["spent_usd"] == pytest.approx(0.2)
    assert status["budgets"][0]["reserved_usd"] == 0


async def test_openai_door_answers_budget_exceeded_in_openais_envelope(
    client: httpx.AsyncClient, users: Users, fake: FakeOpenAI
) -> None:
    res = await set_budget(
        client, users.alice, "/projects/acme/posters/budget", period="daily", limit_usd=0.05
    )
    assert res.status_code == 200, res.text
    refused = await client.post(
        "/v1/images/generations",
        json={"model": "test/priced", "prompt": "a red fox"},
        headers={"Authorization": f"Bearer {users.bob}", "OpenAI-Project": "acme/posters"},
    )
    assert refused.status_code == 402, refused.text
    error = refused.json()["error"]
    assert error["code"] == "budget_exceeded"
    assert "daily hard budget of $0.05" in error["message"]
    assert fake.requests == []  # refused before any provider call


async def test_team_budget_covers_every_project_and_soft_budget_warns(
    client: httpx.AsyncClient, users: Users
) -> None:
    res = await set_budget(
        client, users.alice, "/teams/acme/budget", period="monthly", limit_usd=0.15, hard=False
    )
    assert res.status_code == 200, res.text
    first = (await create(client, users.bob, project="acme/a")).json()["response"]
    assert "warnings" not in first
    second = (await create(client, users.bob, project="acme/b")).json()["response"]
    assert "error" not in second
    assert any("monthly soft budget of $0.15" in w for w in second["warnings"])


async def test_unpriced_models_under_a_budget_are_the_operators_choice(
    app: Any, client: httpx.AsyncClient, users: Users, settings: Settings
) -> None:
    await set_budget(client, users.alice, "/teams/acme/budget", period="daily", limit_usd=5)
    refused = await create(client, users.bob, model="test/unpriced")
    assert refused.status_code == 402
    assert "has no price" in refused.json()["detail"]
    assert "budget_allow_unpriced" in refused.json()["detail"]
    # Without a budget the unpriced model is fine; with the setting on, too.
    assert (
        await create(client, users.bob, model="test/unpriced", project="bob/x")
    ).status_code == 200
    allowed = create_app(replace(settings, budget_allow_unpriced=True))
    async with allowed.router.lifespan_context(allowed):
        transport = httpx.ASGITransport(app=allowed)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as other:
            assert (await create(other, users.bob, model="test/unpriced")).status_code == 200


async def test_only_owners_and_admins_set_budgets(client: httpx.AsyncClient, users: Users) -> None:
    # bob is a member of acme (alice made it), carol is not in it at all.
    member = await set_budget(client, users.bob, "/teams/acme/budget", period="daily", limit_usd=1)
    assert member.status_code == 403
    outsider = await client.get("/teams/acme/budget", headers=basic(users.carol))
    assert outsider.status_code == 403
    bad = await set_budget(client, users.alice, "/teams/acme/budget", period="weekly", limit_usd=1)
    assert bad.status_code == 422
    negative = await set_budget(
        client, users.alice, "/teams/acme/budget", period="daily", limit_usd=-1
    )
    assert negative.status_code == 422


@pytest.mark.parametrize("billed", [PRICE, 0.15], ids=["billed-as-estimated", "billed-more"])
async def test_concurrent_requests_at_the_edge_of_a_budget(
    replicas: list[httpx.AsyncClient],
    fake: FakeOpenAI,
    backend: Any,
    billed: float,
) -> None:
    """N requests at once, split over two replicas, against a hard budget of 10 images.
    Reservations admit exactly what the estimates fit; the overshoot is at most what
    those in flight cost beyond their estimates."""
    first, second = replicas
    ig_key = await _admin_key(first)
    limit, n = 1.0, 24
    assert (
        await set_budget(first, ig_key, "/teams/admin/budget", period="daily", limit_usd=limit)
    ).status_code == 200
    usage = {"output_tokens": round(billed / 100.0 * 1_000_000), "input_tokens": 0}
    fake.responder = lambda _body: Reply(delay_s=0.3, usage=usage)
    answers = await asyncio.gather(
        *(create(replicas[i % 2], ig_key, project="admin/race") for i in range(n))
    )
    statuses = [a.status_code for a in answers]
    served = statuses.count(200)
    assert set(statuses) <= {200, 402}
    assert all("error" not in a.json()["response"] for a in answers if a.status_code == 200)
    spend = (await second.get("/projects/admin/race/spend", headers=basic(ig_key))).json()
    spent = spend["total_cost"]
    overshoot = max(0.0, spent - limit)
    in_flight_excess = served * (billed - PRICE)
    print(
        f"\nbudget race [{backend.name}] billed ${billed}/image (estimate ${PRICE}): "
        f"{n} concurrent requests on 2 replicas, limit ${limit}: {served} served, "
        f"{statuses.count(402)} refused (402), spent ${spent:.4f}, overshoot ${overshoot:.4f} "
        f"(bound: in-flight excess over estimates ${in_flight_excess:.4f})"
    )
    assert len(fake.requests) == served  # refused ones never reached the provider
    assert overshoot <= in_flight_excess + 1e-9
    if billed == PRICE:
        # floor(limit / estimate), however the requests interleave over the replicas.
        assert served == 10
        assert spent == pytest.approx(limit)
    else:
        # Never more than the estimates fit; fewer when some settle at their higher real
        # cost before others reserve (at worst one at a time: 0.15 k + 0.1 <= 1, k <= 6).
        assert 7 <= served <= 10
    window = (await first.get("/teams/admin/budget", headers=basic(ig_key))).json()["budgets"][0]
    assert window["spent_usd"] == pytest.approx(spent)
    assert window["reserved_usd"] == pytest.approx(0.0, abs=1e-9)


async def _admin_key(client: httpx.AsyncClient) -> str:
    app = client._transport.app  # type: ignore[attr-defined]
    imagegate: Imagegate = app.state.imagegate
    key = await imagegate.bootstrap_admin()
    if key is None:
        key = await imagegate.accounts.create_key("admin", "admin")
    return key


async def test_a_generation_under_a_budget_takes_one_transaction_to_start_and_one_to_end(
    client: httpx.AsyncClient, users: Users
) -> None:
    res = await set_budget(
        client, users.alice, "/teams/acme/budget", period="daily", limit_usd=10.0
    )
    assert res.status_code == 200
    # Caches the caller and the budgets over the project, and makes the budget's window.
    assert (await create(client, users.alice)).status_code == 200
    commits: list[str] = []
    writes: list[str] = []
    # Every engine's: on SQLite the group commit has one of its own (SQLiteThread).
    engine = sa.Engine
    listener = lambda conn: commits.append("commit")  # noqa: E731

    def statement(_conn: Any, _cursor: Any, sql: str, *_args: Any) -> None:
        if not sql.lstrip().upper().startswith("SELECT"):  # a cache may expire meanwhile
            writes.append(" ".join(sql.split()[:3]).upper())

    sa.event.listen(engine, "commit", listener)
    sa.event.listen(engine, "before_cursor_execute", statement)
    try:
        answer = await create(client, users.alice)
    finally:
        sa.event.remove(engine, "commit", listener)
        sa.event.remove(engine, "before_cursor_execute", statement)
    assert answer.status_code == 200 and "error" not in answer.json()["response"]
    # The call's start with its reservation; its end with the budget settled: one
    # statement each (the window exists, so the reservation is one conditional UPDATE).
    assert len(commits) == 2
    assert writes == [
        "UPDATE BUDGET_WINDOWS SET",
        "INSERT INTO CALLS",
        "UPDATE CALLS SET",
        "UPDATE BUDGET_WINDOWS SET",
    ]
    status = (await client.get("/teams/acme/budget", headers=basic(users.alice))).json()
    assert status["budgets"][0]["reserved_usd"] == 0
    assert status["budgets"][0]["spent_usd"] == pytest.approx(2 * PRICE)
