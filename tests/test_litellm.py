"""The optional LiteLLM route, driven by LiteLLM's own offline mock response."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from imagegate.config import Settings
from imagegate.digest import weave_digest
from imagegate.providers import litellm as litellm_provider
from imagegate.providers import load_catalog
from tests.conftest import Users, basic
from tests.fake_openai import FakeOpenAI, small_png


def test_litellm_is_installed_and_imports() -> None:
    """The test extra installs LiteLLM: a missing or broken install fails here (the
    route's tests below would fail too), never skips."""
    assert litellm_provider.available()
    assert callable(litellm_provider._litellm().aimage_generation)


@pytest.fixture
def settings(settings: Settings, tmp_path: Path, fake: FakeOpenAI) -> Settings:
    models = tmp_path / "models.toml"
    models.write_text(
        f"""
[models."vertex_ai/imagen-mock"]
provider = "litellm"
params = ["size"]
size_range = [64, 4096]
trusted_url_hosts = ["127.0.0.1:{fake.port}"]
provider_params = {{ mock_response = "{fake.url}/img/5.png" }}
prices = {{ per_image = {{ "-:1024x1024" = 0.04 }} }}

[models."litellm-openai/editor"]
provider = "litellm"
upstream_model = "openai/gpt-image-1.5"
base_url = "{fake.url}/v1"
api_key_env = "LITELLM_TEST_KEY"
params = ["size"]
sizes = ["1024x1024"]
edits = true
max_attempts = 1
"""
    )
    return replace(settings, models_file=models)


async def test_generation_through_litellm_is_kept_priced_and_recorded(client, users: Users) -> None:
    res = await client.post(
        "/image/create",
        json={
            "project_id": "alice/ll",
            "inputs": {"model": "vertex_ai/imagen-mock", "prompt": "x"},
        },
        headers=basic(users.alice),
    )
    body = res.json()
    assert res.status_code == 200 and "data" in body["response"], body
    assert body["response"]["data"][0]["content"]["digest"] == weave_digest(small_png(5))
    call = await client.post(
        "/call/read",
        json={"project_id": "alice/ll", "id": body["weave_call_id"], "include_costs": True},
        headers=basic(users.alice),
    )
    call = call.json()["call"]
    assert call["attributes"]["imagegate"]["provider"] == "litellm"
    assert call["summary"]["attempts"][0]["status_code"] == 200
    assert call["summary"]["weave"]["costs"]["vertex_ai/imagen-mock"]["total_cost"] == 0.04


async def test_an_edit_goes_through_litellm_as_multipart(
    client, users: Users, fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LITELLM_TEST_KEY", "sk-litellm-0123456789")
    fake.reset()
    image, mask = png_with_alpha(hole=False), png_with_alpha(hole=True)
    res = await client.post(
        "/v1/images/edits",
        data={"model": "litellm-openai/editor", "prompt": "add a moon"},
        files=[("image", ("a.png", image, "image/png")), ("mask", ("m.png", mask, "image/png"))],
        headers={"Authorization": f"Bearer {users.alice}", "OpenAI-Project": "ll"},
    )
    assert res.status_code == 200, res.text
    [sent] = fake.requests
    assert sent.path == "/v1/images/edits"
    assert sent.headers["authorization"] == "Bearer sk-litellm-0123456789"
    assert sent.body["model"] == "gpt-image-1.5" and sent.body["prompt"] == "add a moon"
    sent_images = sent.files.get("image") or sent.files.get("image[]") or []
    assert [part[1] for part in sent_images] == [image]
    assert sent.files["mask"][0][1] == mask
    stats = await client.post(
        "/calls/stream_query", json={"project_id": "alice/ll"}, headers=basic(users.alice)
    )
    call = json.loads(stats.text.splitlines()[0])
    assert call["op_name"] == "weave.image_edit_create"
    assert call["attributes"]["imagegate"]["provider"] == "litellm"
    assert call["summary"]["weave"]["status"] == "success"


def png_with_alpha(hole: bool) -> bytes:
    img = Image.new("RGBA", (64, 64), (10, 20, 30, 255))
    if hole:
        img.paste((0, 0, 0, 0), (0, 0, 16, 16))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_unlisted_litellm_prefixes_route_through_litellm() -> None:
    catalog = load_catalog()
    spec = catalog.get("bedrock/amazon.titan-image-generator-v2:0")
    assert spec is not None and spec.provider == "litellm"
    assert spec.upstream_model == "bedrock/amazon.titan-image-generator-v2:0"
    assert catalog.get("nosuchprovider/model") is None
    assert catalog.get("gpt-image-2").provider == "openai"  # listed models keep their route
