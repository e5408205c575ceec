"""Weave's exact image shape on /image/create, checked against the installed `weave`
package: its `Content` is the authority for metadata.json, byte for byte."""

from __future__ import annotations

import base64
import io
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from PIL import Image

from imagegate.config import Settings
from imagegate.core import Imagegate
from imagegate.digest import weave_digest
from imagegate.generation import Generation
from imagegate.schemas import ImageGenerationRequestInputs
from imagegate.store.tables import calls
from tests.conftest import LiveServer, Users, basic
from tests.fake_openai import FakeOpenAI, Reply, error_body

content_module = pytest.importorskip("weave.type_wrappers.Content.content")
Content = content_module.Content

PROJECT = "alice/shape"
MODEL_1 = "test/one-per-request"
SIZE = "1024x1024"


def image_bytes(fmt: str, colour: str = "teal") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (48, 32), colour).save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture
def settings(
    settings: Settings, tmp_path: Path, fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    fake.reset()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-0123456789")
    models = tmp_path / "models.toml"
    models.write_text(
        f"""
[models."gpt-image-1.5"]
base_url = "{fake.url}/v1"
retry_base_s = 0.05
max_attempts = 1

[models."test/one-per-request"]
provider = "openai"
upstream_model = "one"
base_url = "{fake.url}/v1"
max_n_per_request = 1
max_attempts = 1
params = ["size"]
sizes = ["1024x1024"]
"""
    )
    return replace(settings, models_file=models)


async def create(
    client: httpx.AsyncClient, key: str, headers: dict[str, str] | None = None, **inputs: Any
) -> httpx.Response:
    body: dict[str, Any] = {
        "project_id": PROJECT,
        "inputs": {"model": "local/procedural", "prompt": "a red fox", "size": "256x256"},
    }
    if "track_llm_call" in inputs:
        body["track_llm_call"] = inputs.pop("track_llm_call")
    body["inputs"].update(inputs)
    res = await client.post("/image/create", json=body, headers={**basic(key), **(headers or {})})
    assert res.status_code == 200, res.text
    return res


async def file_content(client: httpx.AsyncClient, key: str, digest: str) -> bytes:
    res = await client.post(
        "/file/content", json={"project_id": PROJECT, "digest": digest}, headers=basic(key)
    )
    assert res.status_code == 200, res.text
    return res.content


def weave_metadata(content: Any) -> bytes:
    """What weave stores as a Content's metadata.json (its type handler's `save`)."""
    return json.dumps(content.model_dump(exclude={"data"})).encode()


def assert_same_metadata(ours: bytes, theirs: bytes) -> None:
    mine, weave = json.loads(ours), json.loads(theirs)
    assert list(mine) == list(weave)  # same keys, same order
    for key in weave:
        assert mine[key] == weave[key], key
    assert ours == theirs  # and byte for byte


@pytest.mark.parametrize(
    ("fmt", "mimetype"), [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp")]
)
async def test_base64_metadata_is_what_weave_writes(
    client, users: Users, fake: FakeOpenAI, fmt: str, mimetype: str
) -> None:
    data = image_bytes(fmt)
    fake.push(Reply(image=data))
    res = await create(client, users.alice, model="gpt-image-1.5", n=2, size="1024x1024")
    items = res.json()["response"]["data"]
    assert len(items) == 2
    for index, item in enumerate(items):
        ref = item["b64_json"]
        assert await file_content(client, users.alice, ref["files"]["content"]) == data
        ours = await file_content(client, users.alice, ref["files"]["metadata.json"])
        # Weave's handler: Content.from_base64(b64, mimetype=..., metadata={...}); imagegate
        # names the bytes' real type where Weave's handler says image/png for every image.
        content = Content.from_base64(
            base64.b64encode(data).decode(),
            mimetype=mimetype,
            metadata={"source_index": index, "_original_schema": "b64_json"},
        )
        assert_same_metadata(ours, weave_metadata(content))
        assert item["content"]["mimetype"] == mimetype


async def test_png_metadata_is_exactly_weaves_own_call(client, users: Users) -> None:
    res = await create(client, users.alice, n=1, seed=5)
    ref = res.json()["response"]["data"][0]["b64_json"]
    png = await file_content(client, users.alice, ref["files"]["content"])
    ours = await file_content(client, users.alice, ref["files"]["metadata.json"])
    content = Content.from_base64(
        base64.b64encode(png).decode(),
        mimetype="image/png",
        metadata={"source_index": 0, "_original_schema": "b64_json"},
    )
    assert_same_metadata(ours, weave_metadata(content))


def test_url_metadata_is_what_weave_writes_from_the_url(live_server: LiveServer) -> None:
    """Weave's url case: Content.from_url(url, metadata=...) downloads the image; here the
    installed weave downloads imagegate's own signed URL from a real server."""
    project = "admin/shape"
    with httpx.Client(base_url=live_server.url, auth=("api", live_server.admin_key)) as http:
        res = http.post(
            "/image/create",
            json={
                "project_id": project,
                "inputs": {
                    "model": "local/procedural",
                    "prompt": "a green field",
                    "n": 2,
                    "size": "256x256",
                    "response_format": "url",
                },
            },
        )
        assert res.status_code == 200, res.text
        for index, item in enumerate(res.json()["response"]["data"]):
            assert "b64_json" not in item
            ref = item["url"]
            ours = http.post(
                "/file/content",
                json={"project_id": project, "digest": ref["files"]["metadata.json"]},
            ).content
            # The link is relative (no Host header decides a URL): Weave needs it whole.
            link = live_server.url + item["content"]["url"]
            content = Content.from_url(
                link, metadata={"source_index": index, "_original_schema": "url"}
            )
            assert_same_metadata(ours, weave_metadata(content))


async def test_usage_keeps_provider_keys_and_adds_weaves(
    client, users: Users, fake: FakeOpenAI
) -> None:
    usage = {
        "input_tokens": 50,
        "input_tokens_details": {"text_tokens": 40, "image_tokens": 10},
        "output_tokens": 4160,
        "total_tokens": 4210,
    }
    fake.push(Reply(usage=usage))
    res = await create(client, users.alice, model="gpt-image-1.5", size="1024x1024")
    response = res.json()["response"]
    assert response["model"] == "gpt-image-1.5"
    # Every key the provider sent (the SDK adds its own optional ones, as None), plus three.
    assert {k: response["usage"][k] for k in usage} == usage
    added = {k: response["usage"][k] for k in ("prompt_tokens", "completion_tokens")}
    assert added == {"prompt_tokens": 50, "completion_tokens": 4160}
    read = await client.post(
        "/call/read",
        json={"project_id": PROJECT, "id": res.json()["weave_call_id"]},
        headers=basic(users.alice),
    )
    call = read.json()["call"]
    assert call["output"] == response
    # The summary counts each token once (no prompt_tokens next to input_tokens to sum).
    summary_usage = call["summary"]["usage"]["gpt-image-1.5"]
    assert summary_usage["input_tokens"] == 50 and summary_usage["output_tokens"] == 4160
    assert "prompt_tokens" not in summary_usage


async def test_trace_name_is_display_name_else_op_short_name(
    client, users: Users, imagegate: Imagegate
) -> None:
    res = await create(client, users.alice)
    call_id = res.json()["weave_call_id"]

    async def trace_name() -> str:
        read = await client.post(
            "/call/read", json={"project_id": PROJECT, "id": call_id}, headers=basic(users.alice)
        )
        return str(read.json()["call"]["summary"]["weave"]["trace_name"])

    assert await trace_name() == "weave.image_generation_create"
    async with imagegate.engine.begin() as conn:
        await conn.execute(
            calls.update().where(calls.c.id == call_id).values(display_name="Poster draft")
        )
    assert await trace_name() == "Poster draft"
    async with imagegate.engine.begin() as conn:
        await conn.execute(
            calls.update()
            .where(calls.c.id == call_id)
            .values(display_name=None, op_name="weave:///alice/shape/op/make_poster:AbC123")
        )
    assert await trace_name() == "make_poster"
    # Derived when read, never stored.
    async with imagegate.engine.connect() as conn:
        summary = (await conn.execute(sa.select(calls.c.summary))).scalar_one()
    assert "weave" not in summary


async def test_failed_call_keeps_imagegates_additions(
    client, users: Users, fake: FakeOpenAI
) -> None:
    fake.push(Reply(400, json=error_body("blocked by the safety system", "moderation_blocked")))
    res = await create(client, users.alice, model="gpt-image-1.5", size="1024x1024")
    body = res.json()
    assert body["response"]["error_type"] == "content_policy"
    read = await client.post(
        "/call/read",
        json={"project_id": PROJECT, "id": body["weave_call_id"], "include_costs": True},
        headers=basic(users.alice),
    )
    call = read.json()["call"]
    assert call["output"] is None
    assert call["exception"].startswith("content_policy: ")
    assert call["summary"]["weave"]["status"] == "error"
    assert call["summary"]["error"]["type"] == "content_policy"
    assert call["summary"]["attempts"][0]["status_code"] == 400
    assert "gpt-image-1.5" in call["summary"]["weave"]["costs"]


IDEMPOTENT_CASES = {
    "b64_json": {"n": 2},
    "url": {"response_format": "url"},
    "untracked": {"track_llm_call": False},
}


@pytest.mark.parametrize("case", list(IDEMPOTENT_CASES))
async def test_replay_answers_exactly_the_same_weave_shape(client, users: Users, case: str) -> None:
    inputs = dict(IDEMPOTENT_CASES[case])
    first = await create(client, users.alice, headers={"Idempotency-Key": case}, **inputs)
    again = await create(client, users.alice, headers={"Idempotency-Key": case}, **inputs)
    assert again.content == first.content  # the very same bytes
    response = first.json()["response"]
    if case == "untracked":
        assert first.json()["weave_call_id"] is None
        assert base64.b64decode(response["data"][0]["b64_json"]).startswith(b"\x89PNG")
        return
    key = "url" if case == "url" else "b64_json"
    assert all(item[key]["_type"] == "CustomWeaveType" for item in response["data"])
    read = await client.post(
        "/call/read",
        json={"project_id": PROJECT, "id": first.json()["weave_call_id"]},
        headers=basic(users.alice),
    )
    output = read.json()["call"]["output"]
    for item in response["data"]:
        item["content"].pop("url", None)  # the signed link is in the answer only
    assert output == response


async def test_replay_of_failures_is_the_same(client, users: Users, fake: FakeOpenAI) -> None:
    fake.push(Reply(), Reply(500, json=error_body("one went wrong", "server_error")))
    headers = {"Idempotency-Key": "partial"}
    first = await create(client, users.alice, headers, model=MODEL_1, n=2, size=SIZE)
    again = await create(client, users.alice, headers, model=MODEL_1, n=2, size=SIZE)
    assert len(fake.requests) == 2  # generated once
    assert first.json()["response"]["errors"][0]["error_type"] == "provider_error"
    assert again.content == first.content

    fake.push(Reply(400, json=error_body("blocked", "moderation_blocked")))
    headers = {"Idempotency-Key": "failed"}
    first = await create(client, users.alice, headers, model="gpt-image-1.5", size=SIZE)
    again = await create(client, users.alice, headers, model="gpt-image-1.5", size=SIZE)
    assert len(fake.requests) == 3
    assert first.json()["response"]["error_type"] == "content_policy"
    assert again.content == first.content


async def test_a_replayed_generation_is_the_same_value(imagegate: Imagegate, users: Users) -> None:
    """What another door (its own answer shape) gets from a replay: the same Generation,
    images by digest, their bytes from the file store."""
    principal = await imagegate.accounts.authenticate(users.alice)
    assert principal is not None
    inputs = ImageGenerationRequestInputs(
        model="local/procedural", prompt="a red fox", n=2, size="256x256"
    )

    async def once() -> Generation:
        return await imagegate.idempotency.run(
            project_id=PROJECT,
            user_id=principal.user_id,
            key="door",
            request_hash="h",
            work=lambda: imagegate.generation.generate(principal, PROJECT, inputs),
        )

    first, again = await once(), await once()
    assert again.call_id == first.call_id and first.call_id is not None
    assert all(image.data is None for image in again.images)
    strip = {"images": {i: {"data"} for i in range(2)}}
    assert again.model_dump(exclude=strip) == first.model_dump(exclude=strip)
    for fresh, replayed in zip(first.images, again.images, strict=True):
        data = await imagegate.files.get(PROJECT, replayed.digest)
        assert data is not None
        assert weave_digest(data) == fresh.digest == replayed.digest
