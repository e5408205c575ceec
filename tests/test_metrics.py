"""GET /metrics: Prometheus counters for requests, generations, images, errors and cost."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from imagegate.app import create_app
from imagegate.config import Settings
from imagegate.metrics import Metrics
from tests.conftest import Users, basic
from tests.fake_openai import FakeOpenAI, Reply, error_body

KEY = "sk-metrics-0123456789abcdef"


def catalog(fake: FakeOpenAI) -> str:
    return f"""
[models."test/priced"]
provider = "openai"
upstream_model = "priced"
base_url = "{fake.url}/v1"
params = ["size"]
sizes = ["1024x1024"]
retry_base_s = 0.01
prices = {{ per_image = {{ "-:1024x1024" = 0.04 }} }}

[models."test/limited"]
alias_of = "test/priced"
upstream_model = "limited"

# One image per request, so n=2 is two requests: one succeeds, the other fails.
[models."test/half"]
alias_of = "test/priced"
upstream_model = "half"
max_n_per_request = 1
"""


@pytest.fixture
def settings(
    settings: Settings, tmp_path: Path, fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    fake.reset()
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    models = tmp_path / "models.toml"
    models.write_text(catalog(fake))
    return replace(settings, models_file=models)


def responder() -> Callable[[dict[str, Any]], Reply]:
    """Each model's behaviour at the fake: `limited` is always rate limited (every retry
    too); `half` answers its first request and fails every later one."""
    half_served = 0

    def answer(body: dict[str, Any]) -> Reply:
        nonlocal half_served
        if body["model"] == "limited":
            return Reply(429, json=error_body("slow down", "rate_limit_exceeded"),
                         headers={"Retry-After": "0"})  # fmt: skip
        if body["model"] == "half":
            half_served += 1
            if half_served > 1:
                return Reply(500, json=error_body("gone", "server_error"))
        return Reply()

    return answer


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a scrape, by (name, labels)."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(scrape: dict, name: str, **labels: str) -> float | None:
    return scrape.get((name, frozenset(labels.items())))


async def create(client: httpx.AsyncClient, key: str, **inputs: Any) -> httpx.Response:
    return await client.post(
        "/image/create",
        json={"project_id": "alice/metrics", "inputs": {"prompt": "a red fox", **inputs}},
        headers=basic(key),
    )


async def test_generations_images_errors_and_cost_per_model(
    client, users: Users, fake: FakeOpenAI
) -> None:
    fake.responder = responder()
    await create(client, users.alice, model="local/procedural", size="256x256", n=2)
    await create(client, users.alice, model="test/priced", n=3)
    await create(client, users.alice, model="test/limited")
    await create(client, users.alice, model="test/half", n=2)
    assert (await create(client, users.alice, model="local/procedural", n=11)).status_code == 422
    assert (await client.get("/no/such/page")).status_code == 404
    sent = [r.body["model"] for r in fake.requests]
    assert sent.count("limited") == 3 and sent.count("half") == 4, sent  # with their retries

    res = await client.get("/metrics")  # no API key: scrapers have none
    assert res.status_code == 200
    assert res.headers["content-type"].startswith("text/plain; version=")
    m = samples(res.text)
    assert value(m, "imagegate_generations_total", model="local/procedural", status="success") == 1
    assert value(m, "imagegate_images_total", model="local/procedural") == 2
    assert value(m, "imagegate_images_total", model="test/priced") == 3
    assert value(m, "imagegate_cost_usd_total", model="test/priced") == pytest.approx(0.12)
    assert value(m, "imagegate_generations_total", model="test/limited", status="error") == 1
    errors = "imagegate_generation_errors_total"
    assert value(m, errors, model="test/limited", error_type="rate_limit") == 1
    assert value(m, "imagegate_generations_total", model="test/half", status="partial") == 1
    assert value(m, errors, model="test/half", error_type="partial_failure") == 1
    assert value(m, "imagegate_images_total", model="test/half") == 1
    latency = "imagegate_provider_latency_seconds_count"
    assert value(m, latency, model="local/procedural") == 1
    assert value(m, latency, model="test/limited") == 1
    requests = "imagegate_http_requests_total"
    assert value(m, requests, method="POST", route="/image/create", status="200") == 4
    assert value(m, requests, method="POST", route="/image/create", status="422") == 1
    assert value(m, requests, method="GET", route="unmatched", status="404") == 1


async def test_routes_are_templates_not_raw_paths(client, users: Users) -> None:
    digest = "A" * 43
    await client.get(f"/files/alice/metrics/{digest}.png", headers=basic(users.alice))
    await client.get("/projects/alice/one/spend", headers=basic(users.alice))
    await client.get("/projects/alice/two/spend", headers=basic(users.alice))
    m = samples((await client.get("/metrics")).text)
    requests = "imagegate_http_requests_total"
    route = "/files/{entity}/{project}/{name}"
    assert value(m, requests, method="GET", route=route, status="404") == 1
    route = "/projects/{entity}/{project}/spend"
    assert value(m, requests, method="GET", route=route, status="200") == 2
    assert not [k for k in m if "alice" in str(k)]


async def test_too_large_bodies_are_counted(client, users: Users, settings: Settings) -> None:
    body = b"x" * (settings.max_request_bytes + 1)
    assert (await client.post("/image/create", content=body)).status_code == 413
    m = samples((await client.get("/metrics")).text)
    assert value(m, "imagegate_http_requests_total", method="POST", route="unmatched", status="413")


def test_models_outside_the_catalog_share_one_label() -> None:
    metrics = Metrics(["gpt-image-2"])
    assert metrics.model_label("gpt-image-2") == "gpt-image-2"
    assert metrics.model_label("vertex_ai/anything-a-caller-types") == "other"


@pytest.fixture
async def guarded(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app: FastAPI = create_app(dataclasses.replace(settings, metrics_token="scrape-secret"))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            yield client


async def test_metrics_token_when_set(guarded: httpx.AsyncClient) -> None:
    assert (await guarded.get("/metrics")).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert (await guarded.get("/metrics", headers=wrong)).status_code == 401
    right = {"Authorization": "Bearer scrape-secret"}
    res = await guarded.get("/metrics", headers=right)
    assert res.status_code == 200 and "imagegate_http_requests_total" in res.text
