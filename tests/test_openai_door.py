"""The OpenAI door over HTTP (in process, both backends): what an edit is checked for
before any provider call, GIF and SVG outputs with their true type, SVG served inert,
and /image/create taking the same new parameters."""

from __future__ import annotations

import base64
import errno
import io
import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from imagegate.app import create_app
from imagegate.config import Settings
from imagegate.core import Imagegate
from imagegate.store import LocalFileStore
from tests.conftest import Users, basic

PNG_LIMIT = 4000  # local/procedural's per-image limit in this module's catalog


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    models = tmp_path / "models.toml"
    models.write_text(
        f"""
[models."test/small-inputs"]
alias_of = "local/procedural"
max_input_image_bytes = {PNG_LIMIT}
max_input_images = 3
"""
    )
    return replace(settings, models_file=models, max_upload_bytes=2 * 1024 * 1024)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def encoded(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def rgb(size: tuple[int, int] = (64, 64), fmt: str = "PNG") -> bytes:
    return encoded(Image.new("RGB", size, (200, 10, 10)), fmt)


def mask(size: tuple[int, int] = (64, 64), alpha: bool = True) -> bytes:
    img = Image.new("RGBA" if alpha else "RGB", size, (0, 0, 0, 255) if alpha else (0, 0, 0))
    if alpha:
        img.paste((0, 0, 0, 0), (0, 0, 16, 16))
    return encoded(img)


async def edit(
    client: httpx.AsyncClient,
    key: str,
    files: list[tuple[str, tuple[str, bytes, str]]],
    model: str = "local/procedural",
    **fields: Any,
) -> httpx.Response:
    data = {"model": model, "prompt": "paint it blue", **{k: str(v) for k, v in fields.items()}}
    return await client.post("/v1/images/edits", data=data, files=files, headers=bearer(key))


async def calls_in(client: httpx.AsyncClient, key: str, project: str = "alice/default") -> int:
    res = await client.post("/calls/query_stats", json={"project_id": project}, headers=basic(key))
    return int(res.json()["count"])


def error_of(res: httpx.Response, status: int = 400) -> dict[str, Any]:
    assert res.status_code == status, res.text
    error: dict[str, Any] = res.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    return error


@pytest.mark.parametrize(
    ("files", "param", "words"),
    [
        ([("image", ("a.png", b"hello, not an image", "image/png"))], "image", "not an image"),
        (
            [("image", ("a.gif", encoded(Image.new("P", (8, 8)), "GIF"), "image/gif"))],
            "image",
            "GIF",
        ),
        ([("mask", ("m.png", mask(), "image/png"))], "image", "at least one image"),
        (
            [
                ("image", ("a.png", rgb(), "image/png")),
                ("mask", ("m.png", mask((32, 32)), "image/png")),
            ],
            "mask",
            "same size",
        ),
        (
            [
                ("image", ("a.png", rgb(), "image/png")),
                ("mask", ("m.png", mask(alpha=False), "image/png")),
            ],
            "mask",
            "alpha",
        ),
        (
            [
                ("image", ("a.png", rgb(), "image/png")),
                ("mask", ("m.jpg", rgb(fmt="JPEG"), "image/png")),
            ],
            "mask",
            "JPEG",
        ),
        ([("image[]", ("a.png", rgb(), "image/png"))] * 17, "image", "16"),
    ],
)
async def test_edit_inputs_are_checked_before_anything_happens(
    client, users: Users, files: list, param: str, words: str
) -> None:
    error = error_of(await edit(client, users.alice, files))
    assert error["param"] == param and words in error["message"], error
    assert await calls_in(client, users.alice) == 0


async def test_types_come_from_the_bytes_not_the_name(client, users: Users) -> None:
    # A JPEG sent as "photo.png" with a PNG content type is still a JPEG, and accepted.
    jpeg = rgb(fmt="JPEG")
    res = await edit(client, users.alice, [("image", ("photo.png", jpeg, "image/png"))])
    assert res.status_code == 200, res.text
    webp = rgb(fmt="WEBP")
    res = await edit(client, users.alice, [("image", ("x.bin", webp, "text/plain"))])
    assert res.status_code == 200, res.text


async def test_size_limits_per_file_and_in_total(client, users: Users) -> None:
    noisy = Image.effect_noise((128, 128), 80).convert("RGB")
    big = encoded(noisy)
    assert len(big) > PNG_LIMIT
    error = error_of(
        await edit(
            client, users.alice, [("image", ("a.png", big, "image/png"))], "test/small-inputs"
        )
    )
    assert error["param"] == "image" and str(PNG_LIMIT) in error["message"]
    error = error_of(
        await edit(
            client,
            users.alice,
            [("image[]", ("a.png", rgb(), "image/png"))] * 4,
            "test/small-inputs",
        )
    )
    assert "at most 3" in error["message"]
    # The whole body over the server's upload limit: 413 in OpenAI's envelope.
    huge = b"\x89PNG\r\n\x1a\n" + bytes(3 * 1024 * 1024)
    error = error_of(
        await edit(client, users.alice, [("image", ("a.png", huge, "image/png"))]), 413
    )
    assert "limit" in error["message"]
    assert await calls_in(client, users.alice) == 0


async def test_an_edit_without_a_mask_blends_the_whole_picture(client, users: Users) -> None:
    original = rgb((256, 256))
    res = await edit(client, users.alice, [("image", ("a.png", original, "image/png"))], seed=3)
    body = res.json()
    assert res.status_code == 200, body
    out = Image.open(io.BytesIO(base64.b64decode(body["data"][0]["b64_json"]))).convert("RGB")
    assert out.size == (256, 256) and body["size"] == "256x256"
    assert out.getpixel((128, 128)) != (200, 10, 10)


async def test_gif_and_svg_are_kept_with_their_true_type(client, users: Users) -> None:
    res = await client.post(
        "/v1/images/generations",
        json={
            "model": "local/procedural",
            "prompt": "teal fish",
            "size": "256x256",
            "output_format": "gif",
            "frame_count": 3,
            "frame_duration_ms": 120,
        },
        headers=bearer(users.alice),
    )
    body = res.json()
    assert res.status_code == 200 and body["output_format"] == "gif", body
    gif = Image.open(io.BytesIO(base64.b64decode(body["data"][0]["b64_json"])))
    assert gif.format == "GIF" and gif.n_frames == 3
    call_id = res.headers["imagegate-call-id"]
    call = (
        await client.post(
            "/call/read",
            json={"project_id": "alice/default", "id": call_id},
            headers=basic(users.alice),
        )
    ).json()["call"]
    assert call["output"]["data"][0]["content"]["mimetype"] == "image/gif"

    res = await client.post(
        "/v1/images/generations",
        json={
            "model": "local/procedural",
            "prompt": "<script>alert(1)</script> red",
            "size": "256x256",
            "output_format": "svg",
            "response_format": "url",
        },
        headers=bearer(users.alice),
    )
    body = res.json()
    assert res.status_code == 200 and body["output_format"] == "svg", body
    url = body["data"][0]["url"]
    assert url.endswith(".svg?" + url.split("?", 1)[1])
    served = await client.get(url.replace("http://testserver", ""))
    assert served.status_code == 200
    assert served.headers["content-type"] == "image/svg+xml"
    assert "sandbox" in served.headers["content-security-policy"]
    assert "default-src 'none'" in served.headers["content-security-policy"]
    assert served.content.startswith(b"<svg") and b"script" not in served.content


@pytest.mark.parametrize(
    ("inputs", "field"),
    [
        ({"output_format": "svg", "n": 2}, "n"),
        ({"output_format": "gif", "output_compression": 50}, "output_compression"),
        ({"frame_count": 3}, "frame_count"),
        ({"output_format": "gif", "frame_count": 17}, "frame_count"),
        ({"stream": True}, "stream"),
        ({"partial_images": 2}, "partial_images"),
        ({"complexity": "high"}, "complexity"),  # local/procedural does not take it
    ],
)
async def test_image_create_takes_the_same_parameters(
    client, users: Users, inputs: dict[str, Any], field: str
) -> None:
    res = await client.post(
        "/image/create",
        json={
            "project_id": "alice/p",
            "inputs": {"model": "local/procedural", "prompt": "x", **inputs},
        },
        headers=basic(users.alice),
    )
    assert res.status_code == 422, res.text
    assert res.json()["detail"][0]["loc"][-1] == field


async def test_image_create_makes_a_gif(client, users: Users) -> None:
    res = await client.post(
        "/image/create",
        json={
            "project_id": "alice/p",
            "inputs": {
                "model": "local/procedural",
                "prompt": "x",
                "size": "256x256",
                "output_format": "gif",
                "safety_identifier": "u-1",
            },
        },
        headers=basic(users.alice),
    )
    body = res.json()
    assert res.status_code == 200, body
    assert body["response"]["data"][0]["content"]["mimetype"] == "image/gif"


async def test_stream_refuses_what_its_events_cannot_carry(client, users: Users) -> None:
    for extra, param in (({"n": 2}, "n"), ({"response_format": "url"}, "response_format")):
        res = await client.post(
            "/v1/images/generations",
            json={"model": "local/procedural", "prompt": "x", "stream": True, **extra},
            headers=bearer(users.alice),
        )
        assert error_of(res)["param"] == param


async def test_models_list_and_auth(client, users: Users) -> None:
    res = await client.get("/v1/models", headers=bearer(users.alice))
    names = {m["id"] for m in res.json()["data"]}
    assert {"gpt-image-2.5-sunburst", "gpt-image-2.6-flare", "local/procedural"} <= names
    assert "dall-e-3" not in names and "gpt-image-1" not in names  # shut down
    error = error_of(await client.get("/v1/models"), 401)
    assert error["code"] == "invalid_api_key"
    # An edit is refused by the request guard, before its body is read: still OpenAI's
    # envelope, so the SDK raises AuthenticationError.
    refused = await client.post(
        "/v1/images/edits",
        data={"model": "local/procedural", "prompt": "x"},
        files=[("image", ("a.png", b"\x89PNG", "image/png"))],
        headers={"Authorization": "Bearer ig_wrong"},
    )
    assert error_of(refused, 401)["code"] == "invalid_api_key"
    error = error_of(
        await client.post("/v1/images/generations", content=b"{", headers=bearer(users.alice))
    )
    assert "JSON" in error["message"]
    error = error_of(
        await client.post(
            "/v1/images/generations", json={"prompt": "x"}, headers=bearer(users.alice)
        )
    )
    assert error["param"] == "model"


async def test_an_object_input_a_model_does_not_take_is_a_clear_422(client, users: Users) -> None:
    # Found by the fuzzer: the refused `svg` object was echoed back unserialisable (a 500).
    res = await client.post(
        "/image/create",
        json={
            "project_id": "alice/p",
            "inputs": {"model": "test/small-inputs", "prompt": "x", "svg": {"model": "m"}},
        },
        headers=basic(users.alice),
    )
    assert res.status_code == 422, res.text
    assert res.json()["detail"][0]["input"] == {"model": "m"}


async def test_door_requests_count_in_the_metrics(client, users: Users) -> None:
    def count(text: str) -> float:
        line = 'imagegate_generations_total{model="local/procedural",status="success"}'
        values = [float(row.split()[-1]) for row in text.splitlines() if row.startswith(line)]
        return values[0] if values else 0.0

    before = count((await client.get("/metrics")).text)
    res = await client.post(
        "/v1/images/generations",
        json={"model": "local/procedural", "prompt": "x", "size": "256x256"},
        headers=bearer(users.alice),
    )
    assert res.status_code == 200
    assert count((await client.get("/metrics")).text) == before + 1


async def test_a_replayed_stream_gets_the_same_image_without_paying_again(
    client, users: Users
) -> None:
    body = {
        "model": "local/procedural",
        "prompt": "once",
        "size": "256x256",
        "stream": True,
        "partial_images": 1,
    }
    headers = {**bearer(users.alice), "Idempotency-Key": "stream-1"}
    first = await client.post("/v1/images/generations", json=body, headers=headers)
    second = await client.post("/v1/images/generations", json=body, headers=headers)
    events = [
        [json.loads(line[6:]) for line in res.text.splitlines() if line.startswith("data: ")]
        for res in (first, second)
    ]
    assert [e["type"] for e in events[0]] == [
        "image_generation.partial_image",
        "image_generation.completed",
    ]
    # The replay: the kept generation's image (its partials went by with the first answer).
    assert [e["type"] for e in events[1]] == ["image_generation.completed"]
    assert events[0][-1]["b64_json"] == events[1][-1]["b64_json"]
    assert await calls_in(client, users.alice) == 1


class _FailingStore(LocalFileStore):
    async def put(self, project_id: str, data: bytes) -> str:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


async def test_an_edit_whose_files_cannot_be_stored_is_a_clean_503(
    settings: Settings, users: Users, imagegate: Imagegate
) -> None:
    app = create_app(settings, file_store=_FailingStore(settings.data_dir / "full"))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        res = await edit(client, users.alice, [("image", ("a.png", rgb(), "image/png"))])
        error = error_of(res, 503)
        assert error["code"] == "storage_unavailable" and res.headers["retry-after"]
        assert await calls_in(client, users.alice) == 0  # nothing recorded, nothing paid
