"""OpenAI (and compatible) generations against a local server speaking the OpenAI protocol."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from imagegate.config import Settings
from imagegate.digest import weave_digest
from tests.conftest import Users, basic
from tests.fake_openai import FakeOpenAI, Reply, error_body, small_png

ENV_KEY = "sk-env-0123456789abcdef"


def catalog(fake: FakeOpenAI) -> str:
    v1 = f"{fake.url}/v1"
    host = f"127.0.0.1:{fake.port}"
    return f"""
[models."gpt-image-1.5"]
base_url = "{v1}"
retry_base_s = 0.05

# The only model with a short timeout: the fake never answers it (see test_hung_...).
# Every other model keeps the catalog's generous one, so a loaded machine cannot turn
# a slow success into a timeout and a retry.
[models."test/hung"]
alias_of = "gpt-image-1.5"
timeout_s = 0.5

[models."gpt-image-2"]
base_url = "{v1}"
retry_base_s = 0.05

[models."acme/fast"]
alias_of = "gpt-image-2"
description = "Cheap drafts"
defaults = {{ quality = "low" }}

[models."test/compatible"]
provider = "openai"
upstream_model = "sd-xl"
base_url = "{v1}"
params = ["size"]
size_range = [64, 2048]
upstream_response_format = "url"
trusted_url_hosts = ["{host}"]
max_download_bytes = 8388608
max_attempts = 1

[models."test/untrusted"]
alias_of = "test/compatible"
trusted_url_hosts = []

[models."test/one-per-request"]
provider = "openai"
upstream_model = "one"
base_url = "{v1}"
max_n_per_request = 1
max_attempts = 1
params = ["size"]
sizes = ["1024x1024"]

[models."test/extra-params"]
provider = "openai"
upstream_model = "sd-xl"
base_url = "{v1}"
params = ["size"]
sizes = ["1024x1024"]
max_attempts = 1
provider_params = {{ steps = 30, sampler = "euler" }}

[models."test/azure"]
provider = "azure"
upstream_model = "my-deployment"
base_url = "{fake.url}"
api_version = "2025-04-01-preview"
params = ["size"]
sizes = ["1024x1024"]
"""


@pytest.fixture
def settings(
    settings: Settings, tmp_path: Path, fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    fake.reset()
    monkeypatch.setenv("OPENAI_API_KEY", ENV_KEY)
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "azure-key-0123456789")
    models = tmp_path / "models.toml"
    models.write_text(catalog(fake))
    return replace(settings, models_file=models)


async def generate(client: httpx.AsyncClient, key: str, **inputs: Any) -> dict[str, Any]:
    res = await client.post(
        "/image/create",
        json={"project_id": "alice/openai", "inputs": {"prompt": "a red fox", **inputs}},
        headers=basic(key),
    )
    assert res.status_code == 200, res.text
    return res.json()


async def read_call(client: httpx.AsyncClient, key: str, call_id: str) -> dict[str, Any]:
    res = await client.post(
        "/call/read",
        json={"project_id": "alice/openai", "id": call_id, "include_costs": True},
        headers=basic(key),
    )
    return res.json()["call"]


async def file_content(client: httpx.AsyncClient, key: str, digest: str) -> bytes:
    res = await client.post(
        "/file/content", json={"project_id": "alice/openai", "digest": digest}, headers=basic(key)
    )
    assert res.status_code == 200, res.text
    return res.content


async def test_a_models_provider_params_are_sent_with_the_request(
    client, users: Users, fake
) -> None:
    await generate(client, users.alice, model="test/extra-params", size="1024x1024")
    assert fake.requests[0].body == {
        "model": "sd-xl",
        "prompt": "a red fox",
        "n": 1,
        "size": "1024x1024",
        "steps": 30,
        "sampler": "euler",
    }


async def test_base64_success_passes_every_parameter(client, users: Users, fake) -> None:
    body = await generate(
        client,
        users.alice,
        model="gpt-image-1.5",
        n=2,
        size="1536x1024",
        quality="high",
        background="opaque",
        output_format="webp",
        output_compression=80,
        moderation="low",
        user="end-user-7",
    )
    sent = fake.requests[0]
    assert sent.path == "/v1/images/generations"
    assert sent.headers["authorization"] == f"Bearer {ENV_KEY}"
    assert sent.body == {
        "model": "gpt-image-1.5",
        "prompt": "a red fox",
        "n": 2,
        "size": "1536x1024",
        "quality": "high",
        "background": "opaque",
        "output_format": "webp",
        "output_compression": 80,
        "moderation": "low",
        "user": "end-user-7",
    }
    data = body["response"]["data"]
    digests = [d["b64_json"]["files"]["content"] for d in data]
    stored = [await file_content(client, users.alice, digest) for digest in digests]
    assert stored == [small_png(0), small_png(1)]
    assert body["response"]["model"] == "gpt-image-1.5"
    call = await read_call(client, users.alice, body["weave_call_id"])
    assert call["inputs"]["quality"] == "high" and call["inputs"]["user"] == "end-user-7"
    attempts = call["summary"]["attempts"]
    assert [a["status_code"] for a in attempts] == [200], attempts
    assert len(fake.requests) == 1, attempts
    assert call["attributes"]["imagegate"]["provider"] == "openai"


async def test_slow_success_is_one_attempt_not_a_timeout(client, users: Users, fake) -> None:
    """A reply 1.2 s late (a busy machine) is a success on the first attempt."""
    fake.push(Reply(delay_s=1.2))
    body = await generate(client, users.alice, model="gpt-image-1.5")
    call = await read_call(client, users.alice, body["weave_call_id"])
    attempts = call["summary"]["attempts"]
    assert [a["status_code"] for a in attempts] == [200], attempts
    assert "data" in body["response"], body["response"]


@pytest.mark.parametrize(
    ("quality", "output_tokens", "per_image"),
    [("low", 272, 0.009), ("medium", 1056, 0.034), ("high", 4160, 0.133)],
)
async def test_usage_and_cost_for_gpt_image_1_5(
    client, users: Users, fake, quality: str, output_tokens: int, per_image: float
) -> None:
    usage = {
        "input_tokens": 50,
        "input_tokens_details": {"text_tokens": 40, "image_tokens": 10},
        "output_tokens": output_tokens,
        "total_tokens": 50 + output_tokens,
        # The legacy names too: they must not be counted a second time.
        "prompt_tokens": 50,
    }
    fake.push(Reply(usage=usage), Reply())  # second request: no usage reported
    body = await generate(client, users.alice, model="gpt-image-1.5", quality=quality)
    call = await read_call(client, users.alice, body["weave_call_id"])
    recorded = call["summary"]["usage"]["gpt-image-1.5"]
    assert recorded["input_tokens"] == 50 and recorded["input_text_tokens"] == 40
    assert recorded["input_image_tokens"] == 10 and recorded["output_image_tokens"] == output_tokens
    assert recorded["total_tokens"] == 50 + output_tokens and "prompt_tokens" not in recorded
    cost = call["summary"]["weave"]["costs"]["gpt-image-1.5"]
    expected = (40 * 5 + 10 * 8 + output_tokens * 32) / 1_000_000
    assert cost["basis"] == "tokens"
    assert cost["total_cost"] == pytest.approx(expected)

    # No usage from the provider: the per-image price table.
    unpriced = await generate(client, users.alice, model="gpt-image-1.5", quality=quality)
    call = await read_call(client, users.alice, unpriced["weave_call_id"])
    cost = call["summary"]["weave"]["costs"]["gpt-image-1.5"]
    assert cost["basis"] == "per_image" and cost["total_cost"] == pytest.approx(per_image)

    spend = await client.get("/projects/alice/openai/spend", headers=basic(users.alice))
    assert spend.status_code == 200
    assert spend.json()["total_cost"] == pytest.approx(expected + per_image)
    assert spend.json()["by_model"]["gpt-image-1.5"]["calls"] == 2


async def test_costs_only_with_include_costs(client, users: Users, fake) -> None:
    body = await generate(client, users.alice, model="gpt-image-1.5", quality="low")
    res = await client.post(
        "/call/read",
        json={"project_id": "alice/openai", "id": body["weave_call_id"]},
        headers=basic(users.alice),
    )
    summary = res.json()["call"]["summary"]
    assert "costs" not in summary["weave"] and "costs" not in summary


@pytest.mark.parametrize(
    ("model", "replacement"),
    [
        ("gpt-image-1", "gpt-image-2.5-sunburst"),
        ("dall-e-3", "gpt-image-2"),
        ("dall-e-2", "gpt-image-2"),
    ],
)
async def test_retired_model_refused_without_a_request(
    client, users: Users, fake, model: str, replacement: str
) -> None:
    res = await client.post(
        "/image/create",
        json={"project_id": "alice/openai", "inputs": {"model": model, "prompt": "x"}},
        headers=basic(users.alice),
    )
    assert res.status_code == 422
    message = res.json()["detail"][0]["msg"]
    assert "shut down" in message and replacement in message
    assert fake.requests == []


async def test_deprecated_model_works_with_a_warning(client, users: Users, fake) -> None:
    body = await generate(client, users.alice, model="gpt-image-1.5")
    assert "2026-12-01" in body["response"]["warnings"][0]


async def test_moderation_blocked_is_content_policy_not_retried(client, users: Users, fake) -> None:
    fake.push(
        Reply(
            400,
            json=error_body(
                "Your request was rejected by the safety system.",
                "moderation_blocked",
                moderation_details={"moderation_stage": "input", "categories": ["violence"]},
            ),
        )
    )
    body = await generate(client, users.alice, model="gpt-image-1.5")
    response = body["response"]
    assert response["error_type"] == "content_policy" and response["status_code"] == 400
    assert response["categories"] == ["violence"] and response["stage"] == "input"
    assert len(fake.requests) == 1
    call = await read_call(client, users.alice, body["weave_call_id"])
    assert call["exception"].startswith("content_policy:")
    assert call["summary"]["error"]["categories"] == ["violence"]


async def test_rate_limit_then_success_honours_retry_after(client, users: Users, fake) -> None:
    fake.push(
        Reply(
            429,
            json=error_body("Rate limit reached", "rate_limit_exceeded"),
            headers={"Retry-After": "1"},
        ),
        Reply(),
    )
    body = await generate(client, users.alice, model="gpt-image-1.5")
    assert "data" in body["response"]
    assert len(fake.requests) == 2
    assert fake.requests[1].at - fake.requests[0].at >= 0.95  # waited as told
    call = await read_call(client, users.alice, body["weave_call_id"])
    attempts = call["summary"]["attempts"]
    assert [a["status_code"] for a in attempts] == [429, 200], attempts
    assert attempts[0]["error_type"] == "rate_limit" and attempts[0]["retry_after_s"] >= 1, attempts


async def test_server_errors_give_up_after_three_attempts(client, users: Users, fake) -> None:
    fake.push(*[Reply(500, json=error_body("boom", "server_error"))] * 3)
    body = await generate(client, users.alice, model="gpt-image-1.5")
    assert body["response"]["error_type"] == "provider_error"
    assert body["response"]["status_code"] == 500
    assert len(fake.requests) == 3
    call = await read_call(client, users.alice, body["weave_call_id"])
    attempts = call["summary"]["attempts"]
    assert [a["status_code"] for a in attempts] == [500, 500, 500], attempts
    assert call["summary"]["weave"]["status"] == "error"


async def test_hung_provider_times_out_without_paying_twice(client, users: Users, fake) -> None:
    fake.push(*[Reply(hang=True)] * 3)
    body = await generate(client, users.alice, model="test/hung")
    assert body["response"]["error_type"] == "timeout", body
    assert "may have done (and billed)" in body["response"]["error"]
    call = await read_call(client, users.alice, body["weave_call_id"])
    # Sent, then no answer: the provider may have billed it, so it is asked only once.
    assert len(fake.requests) == 1
    assert [a["error_type"] for a in call["summary"]["attempts"]] == ["timeout"]
    assert call["summary"]["timeout_s"] == 0.5


async def test_malformed_json_is_a_clear_provider_error(client, users: Users, fake) -> None:
    fake.push(Reply(body=b'{"created": 1, "data": [tru'))
    body = await generate(client, users.alice, model="gpt-image-1.5")
    assert body["response"]["error_type"] == "provider_error"
    assert "malformed response" in body["response"]["error"]
    call = await read_call(client, users.alice, body["weave_call_id"])
    assert call["exception"].startswith("provider_error: malformed")


@pytest.mark.parametrize("response_format", ["b64_json", "url"])
async def test_url_images_are_downloaded_and_kept(
    client, users: Users, fake, response_format: str
) -> None:
    fake.push(Reply(urls=[f"{fake.url}/img/3.png", f"{fake.url}/img/4.png"]))
    body = await generate(
        client, users.alice, model="test/compatible", n=2, response_format=response_format
    )
    assert fake.requests[0].body["response_format"] == "url"
    assert fake.downloads == 2
    for item, index in zip(body["response"]["data"], (3, 4), strict=True):
        assert item["content"]["digest"] == weave_digest(small_png(index))
        # Where Weave puts the Content: at the key the caller asked for.
        assert item[response_format]["files"]["content"] == weave_digest(small_png(index))
        if response_format == "url":
            link = item["content"]["url"]
            assert link.startswith("/files/alice/openai/")  # relative: no Host decides it
            assert str(fake.port) not in json.dumps(body)  # never the provider's URL
            got = await client.get(link)
            assert got.content == small_png(index)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/img/1.png",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:{port}/img/1.png",
        "http://10.0.0.8/a.png",
        "file:///etc/passwd",
        "ftp://example.invalid/a.png",
    ],
)
async def test_urls_to_internal_addresses_are_refused(client, users: Users, fake, url: str):
    fake.push(Reply(urls=[url.format(port=fake.port)]))
    body = await generate(client, users.alice, model="test/untrusted")
    assert body["response"]["error_type"] == "provider_error"
    assert "refusing image URL" in body["response"]["error"]
    assert fake.downloads == 0


async def test_huge_url_body_is_cut_off(client, users: Users, fake) -> None:
    fake.push(Reply(urls=[f"{fake.url}/huge.png"]))
    body = await generate(client, users.alice, model="test/compatible")
    assert "larger than the limit of 8388608 bytes" in body["response"]["error"]


async def test_partial_failure_keeps_the_good_images(client, users: Users, fake) -> None:
    fake.push(Reply(), Reply(500, json=error_body("one went wrong", "server_error")), Reply())
    body = await generate(client, users.alice, model="test/one-per-request", n=3)
    response = body["response"]
    assert len(fake.requests) == 3 and all(r.body["n"] == 1 for r in fake.requests)
    assert len(response["data"]) == 2
    assert response["errors"] == [
        {"error": "one went wrong", "error_type": "provider_error", "status_code": 500}
    ]
    call = await read_call(client, users.alice, body["weave_call_id"])
    assert len(call["output"]["data"]) == 2
    assert call["exception"].startswith("partial_failure: 1 of 3 images failed")
    for item in call["output"]["data"]:
        stored = await client.post(
            "/file/content",
            json={"project_id": "alice/openai", "digest": item["b64_json"]["files"]["content"]},
            headers=basic(users.alice),
        )
        assert stored.status_code == 200


async def test_alias_with_defaults_and_catalog_validation(client, users: Users, fake) -> None:
    body = await generate(client, users.alice, model="acme/fast")
    assert fake.requests[0].body["model"] == "gpt-image-2"
    assert fake.requests[0].body["quality"] == "low"
    call = await read_call(client, users.alice, body["weave_call_id"])
    assert call["inputs"]["model"] == "acme/fast" and call["inputs"]["quality"] == "low"

    async def refused(**inputs: Any) -> str:
        res = await client.post(
            "/image/create",
            json={"project_id": "alice/openai", "inputs": {"prompt": "x", **inputs}},
            headers=basic(users.alice),
        )
        assert res.status_code == 422, res.text
        return str(res.json()["detail"][0]["msg"])

    assert "one of low, medium, high, auto" in await refused(model="gpt-image-1.5", quality="ultra")
    assert "does not take 'style'" in await refused(model="gpt-image-1.5", style="vivid")
    assert "one of 1024x1024, 1536x1024" in await refused(model="gpt-image-1.5", size="512x512")
    assert "multiples of 16" in await refused(model="gpt-image-2", size="1000x1000")
    assert "aspect ratio" in await refused(model="gpt-image-2", size="3840x1024")
    assert "fit within 3840x2160" in await refused(model="gpt-image-2", size="2400x2400")
    assert "jpeg or webp" in await refused(model="gpt-image-2", output_compression=50)
    assert "png or webp" in await refused(
        model="gpt-image-2", background="transparent", output_format="jpeg"
    )
    assert "not supported" in await refused(model="gpt-image-2", stream=True)
    assert "at most 32000" in await refused(model="gpt-image-2", prompt="x" * 32001)
    assert fake.requests[1:] == []  # none of those reached the provider
    ok = await generate(client, users.alice, model="gpt-image-2", size="2048x1152")
    assert fake.requests[-1].body["size"] == "2048x1152" and "data" in ok["response"]


async def test_azure_deployment(client, users: Users, fake) -> None:
    body = await generate(client, users.alice, model="test/azure")
    sent = fake.requests[0]
    assert sent.path.startswith("/openai/deployments/my-deployment/images/generations")
    assert "api-version=2025-04-01-preview" in sent.path
    assert sent.headers["api-key"] == "azure-key-0123456789"
    assert "data" in body["response"]


async def test_openai_base_url_from_environment(
    client, users: Users, fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", f"{fake.url}/v1")
    # gpt-image-2-2026-04-21 has no base_url of its own in the test catalog.
    body = await generate(client, users.alice, model="gpt-image-2-2026-04-21")
    assert fake.requests[0].body["model"] == "gpt-image-2-2026-04-21"
    assert "data" in body["response"]


async def test_models_endpoint(client, users: Users) -> None:
    assert (await client.get("/models")).status_code == 401
    res = await client.get("/models", headers=basic(users.alice))
    models = {m["name"]: m for m in res.json()["models"]}
    assert models["gpt-image-2"]["state"] == "current"
    assert models["gpt-image-2"]["options"]["quality"] == ["low", "medium", "high", "auto"]
    assert models["gpt-image-1.5"]["state"] == "deprecated"
    assert models["gpt-image-1"]["state"] == "shut_down"
    assert models["gpt-image-1"]["replacement"] == "gpt-image-2.5-sunburst"
    assert models["acme/fast"]["defaults"] == {"quality": "low"}
    assert models["local/procedural"]["params"] == [
        "frame_count",
        "frame_duration_ms",
        "output_format",
        "response_format",
        "safety_identifier",
        "seed",
        "size",
        "stream",
        "user",
    ]
