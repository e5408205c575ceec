"""The official `openai` Python SDK, sync and async, against a real `imagegate serve`
process: generations, edits, streams and errors through the OpenAI door, each request
recorded as /image/create records it. Upstream models go to tests/fake_openai.py."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types import ImageEditCompletedEvent, ImageGenCompletedEvent, ImagesResponse
from PIL import Image

from imagegate.digest import weave_digest
from tests.conftest import IMAGEGATE_BIN, Backend, LiveServer, basic, start_server, stop_server
from tests.fake_openai import FakeOpenAI, Reply, error_body, small_png

UPSTREAM_KEY = "sk-door-0123456789abcdef"
TOKENS = {
    "input_tokens": 50,
    "input_tokens_details": {"text_tokens": 40, "image_tokens": 10},
    "output_tokens": 4160,
    "total_tokens": 4210,
}


def catalog(fake: FakeOpenAI) -> str:
    v1 = f"{fake.url}/v1"
    return f"""
[models."gpt-image-2.5-sunburst"]
base_url = "{v1}"
retry_base_s = 0.05
max_attempts = 1

[models."gpt-image-2.5-flare"]
base_url = "{v1}"
max_attempts = 1

[models."gpt-image-2.6-flare"]
base_url = "{v1}"
max_attempts = 1

[models."gpt-image-2"]
base_url = "{v1}"
max_attempts = 1

[models."test/no-edits"]
provider = "procedural"
size_range = [256, 1024]
params = ["size"]
"""


@pytest.fixture(scope="module")
def door(
    tmp_path_factory: pytest.TempPathFactory, module_backend: Backend, fake: FakeOpenAI
) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("door")
    models = root / "models.toml"
    models.write_text(catalog(fake))
    env = {**module_backend.env, "OPENAI_API_KEY": UPSTREAM_KEY, "IMAGEGATE_MODELS": str(models)}
    server = start_server(root / "data", env)
    server_env[id(server)] = env
    yield server
    stop_server(server)


server_env: dict[int, dict[str, str]] = {}


@pytest.fixture(autouse=True)
def fresh_fake(fake: FakeOpenAI) -> None:
    fake.reset()


def sync_client(door: LiveServer, **kwargs: Any) -> openai.OpenAI:
    kwargs.setdefault("api_key", door.admin_key)
    return openai.OpenAI(base_url=f"{door.url}/v1", max_retries=0, **kwargs)


def async_client(door: LiveServer, **kwargs: Any) -> openai.AsyncOpenAI:
    kwargs.setdefault("api_key", door.admin_key)
    return openai.AsyncOpenAI(base_url=f"{door.url}/v1", max_retries=0, **kwargs)


def read_call(door: LiveServer, project_id: str, call_id: str) -> dict[str, Any]:
    res = httpx.post(
        f"{door.url}/call/read",
        json={"project_id": project_id, "id": call_id, "include_costs": True},
        headers=basic(door.admin_key),
    )
    assert res.status_code == 200, res.text
    call: dict[str, Any] = res.json()["call"]
    return call


def project_calls(door: LiveServer, project_id: str, key: str | None = None) -> list[dict]:
    res = httpx.post(
        f"{door.url}/calls/stream_query",
        json={"project_id": project_id},
        headers=basic(key or door.admin_key),
    )
    assert res.status_code == 200, res.text
    return [json.loads(line) for line in res.text.splitlines() if line.strip()]


def file_bytes(door: LiveServer, project_id: str, digest: str) -> bytes:
    res = httpx.post(
        f"{door.url}/file/content",
        json={"project_id": project_id, "digest": digest},
        headers=basic(door.admin_key),
    )
    assert res.status_code == 200, res.text
    return res.content


def png(colour: tuple[int, int, int], size: tuple[int, int] = (256, 256)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def hole_mask(size: tuple[int, int] = (256, 256), hole: int = 96) -> bytes:
    """Opaque everywhere but a fully transparent square at the top left (edit there)."""
    mask = Image.new("RGBA", size, (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (0, 0, hole, hole))
    buf = io.BytesIO()
    mask.save(buf, format="PNG")
    return buf.getvalue()


def decode(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


# --- generate ---------------------------------------------------------------------------


def test_sync_generate_is_recorded_like_image_create(door: LiveServer) -> None:
    client = sync_client(door)
    raw = client.images.with_raw_response.generate(
        model="local/procedural", prompt="a red fox in a blue forest", size="256x256"
    )
    result = raw.parse()
    assert isinstance(result, ImagesResponse)
    assert result.size == "256x256" and result.output_format == "png"
    image_bytes = base64.b64decode(result.data[0].b64_json or "")
    assert Image.open(io.BytesIO(image_bytes)).size == (256, 256)
    # No project named: the admin key has no default project, so admin/default.
    call = read_call(door, "admin/default", raw.headers["imagegate-call-id"])
    assert call["op_name"] == "weave.image_generation_create"
    assert call["inputs"]["prompt"] == "a red fox in a blue forest"
    assert call["summary"]["weave"]["status"] == "success"
    ref = call["output"]["data"][0]["b64_json"]
    assert ref["files"]["content"] == weave_digest(image_bytes)
    assert file_bytes(door, "admin/default", weave_digest(image_bytes)) == image_bytes


async def test_async_generate_passes_todays_parameters_upstream(
    door: LiveServer, fake: FakeOpenAI
) -> None:
    fake.push(Reply(usage=TOKENS))
    async with async_client(door, project="admin/upstream") as client:
        result = await client.images.generate(
            model="gpt-image-2.5-sunburst",
            prompt="a lighthouse",
            size="1536x864",
            quality="xhigh",
            complexity="high",
            safety_identifier="user-hash-7",
            user="legacy-user",
        )
    sent = fake.requests[0]
    assert sent.path == "/v1/images/generations"
    assert sent.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"  # never the caller's key
    assert sent.body["model"] == "gpt-image-2.5-sunburst"
    assert sent.body["quality"] == "xhigh" and sent.body["complexity"] == "high"
    assert sent.body["safety_identifier"] == "user-hash-7" and sent.body["size"] == "1536x864"
    assert result.quality == "xhigh" and result.safety_identifier == "user-hash-7"
    assert result.usage is not None and result.usage.output_tokens == 4160
    assert base64.b64decode(result.data[0].b64_json or "") == small_png(0)
    [call] = project_calls(door, "admin/upstream")
    assert call["inputs"]["complexity"] == "high"
    assert call["summary"]["usage"]["gpt-image-2.5-sunburst"]["output_tokens"] == 4160


# --- edit -------------------------------------------------------------------------------


def test_sync_edit_two_images_and_a_mask_repaints_only_the_hole(door: LiveServer) -> None:
    first, second, mask = png((200, 30, 30)), png((30, 30, 200)), hole_mask()
    raw = sync_client(door, project="admin/edits").images.with_raw_response.edit(
        model="local/procedural",
        prompt="a green meadow",
        image=[("first.png", first, "image/png"), ("second.png", second, "image/png")],
        mask=("mask.png", mask, "image/png"),
    )
    result = raw.parse()
    edited = decode(result.data[0].b64_json or "").convert("RGB")
    original = Image.open(io.BytesIO(first)).convert("RGB")
    assert edited.size == original.size and result.size == "256x256"
    changed = {
        (x, y)
        for x in range(0, 256, 4)
        for y in range(0, 256, 4)
        if edited.getpixel((x, y)) != original.getpixel((x, y))
    }
    # Every pixel outside the transparent square is identical; inside, it is repainted.
    assert changed and all(x < 96 and y < 96 for x, y in changed)
    assert len(changed) > 0.5 * (96 // 4) ** 2

    call = read_call(door, "admin/edits", raw.headers["imagegate-call-id"])
    assert call["op_name"] == "weave.image_edit_create"
    refs = call["inputs"]["image"]
    assert [r["files"]["content"] for r in refs] == [weave_digest(first), weave_digest(second)]
    assert all(r["weave_type"]["type"].endswith("Content") for r in refs)
    assert call["inputs"]["mask"]["files"]["content"] == weave_digest(mask)
    for data in (first, second, mask):
        assert file_bytes(door, "admin/edits", weave_digest(data)) == data


def test_edit_is_deterministic(door: LiveServer) -> None:
    client = sync_client(door, project="admin/edits")
    args: dict[str, Any] = {
        "model": "local/procedural",
        "prompt": "orange sunset",
        "image": ("a.png", png((10, 120, 10)), "image/png"),
        "mask": ("m.png", hole_mask(), "image/png"),
        "extra_body": {"seed": 7},
    }
    one = client.images.edit(**args).data[0].b64_json
    two = client.images.edit(**args).data[0].b64_json
    assert one == two


async def test_async_edit_goes_upstream_as_multipart(door: LiveServer, fake: FakeOpenAI) -> None:
    first, second, mask = png((1, 2, 3)), png((4, 5, 6)), hole_mask()
    async with async_client(door) as client:
        result = await client.images.edit(
            model="gpt-image-2.5-sunburst",
            prompt="add a hat",
            image=[("a.png", first, "image/png"), ("b.png", second, "image/png")],
            mask=("mask.png", mask, "image/png"),
            quality="max",
        )
    sent = fake.requests[0]
    assert sent.path == "/v1/images/edits"
    assert sent.headers["content-type"].startswith("multipart/form-data")
    assert [part[1] for part in sent.files["image[]"]] == [first, second]
    assert sent.files["mask"][0][1] == mask
    assert sent.body["prompt"] == "add a hat" and sent.body["quality"] == "max"
    assert base64.b64decode(result.data[0].b64_json or "") == small_png(0)


# --- streaming --------------------------------------------------------------------------


def test_sync_stream_of_partials_then_the_image(door: LiveServer) -> None:
    client = sync_client(door, project="admin/streams")
    stream = client.images.generate(
        model="local/procedural",
        prompt="violet waves",
        size="256x256",
        stream=True,
        partial_images=2,
    )
    events = list(stream)
    assert [e.type for e in events] == [
        "image_generation.partial_image",
        "image_generation.partial_image",
        "image_generation.completed",
    ]
    assert [e.partial_image_index for e in events[:2]] == [0, 1]  # type: ignore[union-attr]
    completed = events[-1]
    assert isinstance(completed, ImageGenCompletedEvent)
    final = decode(completed.b64_json)
    assert final.size == (256, 256)
    # The partials are progressive renders of the final picture: coarse, then finer.
    partials = [decode(e.b64_json).convert("RGB") for e in events[:2]]  # type: ignore[union-attr]
    assert all(p.size == (256, 256) for p in partials)
    [call] = project_calls(door, "admin/streams")
    assert call["inputs"]["stream"] is True and call["inputs"]["partial_images"] == 2
    kept = call["output"]["partial_images"]
    assert len(kept) == 2
    for event, item in zip(events[:2], kept, strict=True):
        data = base64.b64decode(event.b64_json)  # type: ignore[union-attr]
        assert item["b64_json"]["files"]["content"] == weave_digest(data)
        assert file_bytes(door, "admin/streams", weave_digest(data)) == data


async def test_async_stream_passes_upstream_partials_as_they_arrive(
    door: LiveServer, fake: FakeOpenAI
) -> None:
    fake.push(Reply(partial_delay_s=0.4))
    async with async_client(door) as client:
        started = time.monotonic()
        stream = await client.images.edit(
            model="gpt-image-2.5-sunburst",
            prompt="make it night",
            image=("a.png", png((9, 9, 9)), "image/png"),
            stream=True,
            partial_images=2,
        )
        arrivals = []
        kinds = []
        async for event in stream:
            arrivals.append(time.monotonic() - started)
            kinds.append(event.type)
            last = event
    assert kinds == ["image_edit.partial_image", "image_edit.partial_image", "image_edit.completed"]
    assert isinstance(last, ImageEditCompletedEvent)
    assert base64.b64decode(last.b64_json) == small_png(0)
    # The upstream takes 3 x 0.4 s; the first partial arrives long before it finished.
    assert arrivals[0] < arrivals[-1] - 0.6
    assert fake.requests[0].body["stream"] == "true"


def test_client_gone_mid_stream_still_pays_off(door: LiveServer, fake: FakeOpenAI) -> None:
    fake.push(Reply(partial_delay_s=0.3))
    body = {
        "model": "gpt-image-2",
        "prompt": "keep going",
        "stream": True,
        "partial_images": 3,
    }
    headers = {"Authorization": f"Bearer {door.admin_key}", "OpenAI-Project": "gone"}
    with (
        httpx.Client(timeout=10) as client,
        client.stream(
            "POST", f"{door.url}/v1/images/generations", json=body, headers=headers
        ) as res,
    ):
        assert res.status_code == 200
        first = next(res.iter_lines())
        assert first == "event: image_generation.partial_image"
    # Disconnected after the first partial: the generation still completes and is recorded.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        calls = project_calls(door, "admin/gone")
        if calls and calls[0].get("ended_at"):
            break
        time.sleep(0.1)
    [call] = calls
    assert call["summary"]["weave"]["status"] == "success"
    assert call["output"]["data"][0]["b64_json"]["files"]["content"] == weave_digest(small_png(0))
    assert len(call["output"]["partial_images"]) == 3


# --- errors as the SDK's own exception types ---------------------------------------------


def test_errors_are_the_sdks_exceptions(door: LiveServer, fake: FakeOpenAI) -> None:
    client = sync_client(door)
    with pytest.raises(openai.AuthenticationError):
        sync_client(door, api_key="ig_wrong").images.generate(model="local/procedural", prompt="x")
    with pytest.raises(openai.NotFoundError) as not_found:
        client.images.generate(model="dall-e-3", prompt="x")
    assert "gpt-image-2" in not_found.value.message
    assert not_found.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        client.images.generate(model="no-such-model", prompt="x")
    with pytest.raises(openai.BadRequestError) as bad_n:
        client.images.generate(model="local/procedural", prompt="x", n=11)
    assert bad_n.value.param == "n"
    with pytest.raises(openai.BadRequestError) as bad_quality:
        client.images.generate(model="gpt-image-2.6-sunburst", prompt="x", quality="xhigh")
    assert bad_quality.value.param == "quality"  # xhigh is for the 2.5 models only
    with pytest.raises(openai.PermissionDeniedError):
        sync_client(door, project="someone-else/p").images.generate(
            model="local/procedural", prompt="x"
        )
    with pytest.raises(openai.BadRequestError) as bad_mask:
        client.images.edit(
            model="local/procedural",
            prompt="x",
            image=("a.png", png((1, 1, 1)), "image/png"),
            mask=("m.png", hole_mask((128, 128)), "image/png"),
        )
    assert bad_mask.value.param == "mask" and "same size" in bad_mask.value.message
    with pytest.raises(openai.BadRequestError) as cannot_edit:
        client.images.edit(
            model="test/no-edits", prompt="x", image=("a.png", png((1, 1, 1)), "image/png")
        )
    assert cannot_edit.value.param == "model"
    assert fake.requests == []  # none of these reached a provider

    fake.push(Reply(status=429, json=error_body("slow down", "rate_limit_exceeded")))
    with pytest.raises(openai.RateLimitError):
        client.images.generate(model="gpt-image-2", prompt="x")
    fake.push(
        Reply(
            status=400,
            json=error_body(
                "blocked",
                "moderation_blocked",
                moderation_details={"moderation_stage": "input", "categories": ["violence"]},
            ),
        )
    )
    with pytest.raises(openai.BadRequestError) as blocked:
        client.images.generate(model="gpt-image-2", prompt="x")
    assert blocked.value.code == "moderation_blocked"
    assert blocked.value.body["moderation_details"]["categories"] == ["violence"]  # type: ignore[index]


def test_a_path_or_method_the_door_does_not_serve_is_an_openai_error(door: LiveServer) -> None:
    """The framework's own 404 and 405 come in OpenAI's envelope, as OpenAI answers an
    unknown URL, so the SDK reads their message; elsewhere the answers stay Weave's."""
    client = sync_client(door)
    with pytest.raises(openai.NotFoundError) as unknown:
        client.get("/images/variations/nope", cast_to=object)
    assert unknown.value.message == "Error code: 404 - Invalid URL (GET /v1/images/variations/nope)"
    assert unknown.value.body == {  # type: ignore[comparison-overlap]
        "message": "Invalid URL (GET /v1/images/variations/nope)",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
    with pytest.raises(openai.APIStatusError) as wrong_method:
        client.get("/images/generations", cast_to=object)
    assert wrong_method.value.status_code == 405
    assert wrong_method.value.response.headers["allow"] == "POST"
    assert wrong_method.value.body["message"] == (  # type: ignore[index]
        "GET is not allowed on /v1/images/generations: use POST with a JSON body"
    )
    weave = httpx.get(f"{door.url}/no-such-endpoint")
    assert weave.status_code == 404 and weave.json() == {"detail": "Not Found"}
    page = httpx.get(f"{door.url}/ui/no-such-page")
    assert page.status_code == 404
    assert page.headers["content-type"].startswith("text/html")
    assert "There is no page at /ui/no-such-page." in page.text


async def test_async_errors_and_a_stream_error(door: LiveServer, fake: FakeOpenAI) -> None:
    async with async_client(door) as client:
        with pytest.raises(openai.BadRequestError) as bad:
            await client.images.generate(
                model="local/procedural", prompt="x", stream=True, partial_images=4
            )
        assert bad.value.param == "partial_images"
        fake.push(Reply(stream_error={"message": "upstream fell over", "type": "server_error"}))
        stream = await client.images.generate(
            model="gpt-image-2", prompt="x", stream=True, partial_images=1
        )
        seen = []
        with pytest.raises(openai.APIError) as broken:
            async for event in stream:
                seen.append(event.type)
        assert seen == ["image_generation.partial_image"]
        assert "upstream fell over" in broken.value.message


# --- projects and idempotency -------------------------------------------------------------


def test_key_default_project_then_header(door: LiveServer, tmp_path: Path) -> None:
    created = subprocess.run(
        [str(IMAGEGATE_BIN), "keys", "create", "--user", "dora", "--project", "pics"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **server_env[id(door)], "IMAGEGATE_DATA_DIR": str(door.data_dir)},
    )
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    client = sync_client(door, api_key=key)
    client.images.generate(model="local/procedural", prompt="x", size="256x256")
    sync_client(door, api_key=key, project="studio").images.generate(
        model="local/procedural", prompt="y", size="256x256"
    )
    assert [c["inputs"]["prompt"] for c in project_calls(door, "dora/pics", key)] == ["x"]
    assert [c["inputs"]["prompt"] for c in project_calls(door, "dora/studio", key)] == ["y"]


def test_idempotency_key_never_pays_twice(door: LiveServer, fake: FakeOpenAI) -> None:
    client = sync_client(door)
    answers = [
        client.images.with_raw_response.generate(
            model="gpt-image-2",
            prompt="once",
            extra_headers={"Idempotency-Key": "door-retry-1"},
        )
        for _ in range(2)
    ]
    assert len(fake.requests) == 1
    first, second = (a.parse() for a in answers)
    assert answers[0].headers["imagegate-call-id"] == answers[1].headers["imagegate-call-id"]
    assert first.data[0].b64_json == second.data[0].b64_json


async def test_markup_guides_a_25_edit_and_is_refused_elsewhere(
    door: LiveServer, fake: FakeOpenAI
) -> None:
    first, markup = png((5, 5, 5)), hole_mask()
    async with async_client(door, project="admin/markup") as client:
        await client.images.edit(
            model="gpt-image-2.5-flare",
            prompt="follow my scribbles",
            image=("a.png", first, "image/png"),
            markup=("markup.png", markup, "image/png"),
        )
        with pytest.raises(openai.BadRequestError) as both:
            await client.images.edit(
                model="gpt-image-2.5-flare",
                prompt="x",
                image=("a.png", first, "image/png"),
                markup=("markup.png", markup, "image/png"),
                mask=("mask.png", markup, "image/png"),
            )
        assert both.value.param == "markup"
        with pytest.raises(openai.BadRequestError) as not_26:
            await client.images.edit(
                model="gpt-image-2.6-flare",
                prompt="x",
                image=("a.png", first, "image/png"),
                markup=("markup.png", markup, "image/png"),
            )
        assert "does not take markup" in not_26.value.message
    [sent] = fake.requests  # only the first reached the provider
    assert sent.files["markup"][0][1] == markup and "mask" not in sent.files
    assert sent.body["model"] == "gpt-image-2.5-flare"
    [call] = project_calls(door, "admin/markup")
    assert call["inputs"]["markup"]["files"]["content"] == weave_digest(markup)
