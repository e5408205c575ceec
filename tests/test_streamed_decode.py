"""A provider's answer decoded as it arrives, straight into the file store: large images
come through whole, bad or cut-off answers are clear errors, and nothing half-written (no
temp file, no partial image) is ever left behind. Through HTTP, against the fake OpenAI
server at the network boundary."""

from __future__ import annotations

import base64
import io
import json
import random
from pathlib import Path

import httpx
import pytest
from fastapi.responses import JSONResponse
from PIL import Image

from imagegate.config import Settings
from imagegate.digest import weave_digest
from tests.backends import stored_files
from tests.conftest import Users
from tests.fake_openai import FakeOpenAI, Reply, small_png
from tests.test_openai_provider import ENV_KEY, file_content, generate, read_call
from tests.test_openai_provider import settings as settings

__all__ = ["ENV_KEY"]


def grainy_png(width: int, height: int, seed: int = 1) -> bytes:
    """A PNG that compresses like a photograph: several MB at 1536x1536."""
    noise = random.Random(seed).randbytes(width * height * 3)
    buf = io.BytesIO()
    Image.frombytes("RGB", (width, height), noise).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


async def stored_names(settings: Settings) -> list[str]:
    """The names of the files in the store (on disk or in the bucket), temp files too."""
    return sorted(key.rsplit("/", 1)[-1] for key in await stored_files(settings))


def temp_files(settings: Settings) -> list[Path]:
    """Temp files anywhere under the data dir (local store, or S3's staging)."""
    roots = [settings.data_dir, settings.files_dir]
    return [p for root in roots if root.exists() for p in root.rglob(".tmp-*")]


def answer_body(*b64: str) -> bytes:
    data = ",".join(f'{{"b64_json":"{b}"}}' for b in b64)
    return b'{"created":1700000000,"data":[%s]}' % data.encode()


async def test_a_large_image_is_stored_whole_and_answered_exactly(
    client: httpx.AsyncClient, users: Users, fake: FakeOpenAI, settings: Settings
) -> None:
    png = grainy_png(1536, 1536)
    assert len(png) > 6_000_000  # many network chunks
    fake.push(Reply(image=png))
    body = await generate(client, users.alice, model="gpt-image-1.5")
    item = body["response"]["data"][0]
    assert item["content"]["digest"] == weave_digest(png)
    assert item["content"]["size"] == len(png)
    assert (item["content"]["width"], item["content"]["height"]) == (1536, 1536)
    assert await file_content(client, users.alice, weave_digest(png)) == png
    assert temp_files(settings) == []
    # The OpenAI door answers the same bytes as base64.
    fake.push(Reply(image=png))
    res = await client.post(
        "/v1/images/generations",
        json={"model": "gpt-image-1.5", "prompt": "a red fox"},
        headers={"Authorization": f"Bearer {users.alice}", "OpenAI-Project": "openai"},
    )
    assert res.status_code == 200, res.text[:300]
    assert base64.b64decode(res.json()["data"][0]["b64_json"], validate=True) == png
    # Streamed from the file, byte for byte what JSONResponse would have sent.
    assert res.content == JSONResponse(res.json()).body
    assert res.headers["content-length"] == str(len(res.content))
    assert temp_files(settings) == []


@pytest.mark.parametrize("keep_alive", ["off", "whitespace"])
async def test_the_openai_door_answers_several_images_exactly(
    client: httpx.AsyncClient, users: Users, fake: FakeOpenAI, keep_alive: str
) -> None:
    pngs = [grainy_png(300 + i, 200, seed=i) for i in range(3)]  # sizes 0, 1, 2 mod 3
    b64 = [base64.b64encode(png).decode() for png in pngs]
    fake.push(Reply(body=answer_body(*b64)))
    res = await client.post(
        "/v1/images/generations",
        json={"model": "gpt-image-1.5", "prompt": "a red fox", "n": 3},
        headers={
            "Authorization": f"Bearer {users.alice}",
            "OpenAI-Project": "openai",
            "Imagegate-Keep-Alive": keep_alive,
        },
    )
    assert res.status_code == 200, res.text[:300]
    answer = res.json()
    assert [item["b64_json"] for item in answer["data"]] == b64
    assert res.content.lstrip(b" ") == JSONResponse(answer).body


async def test_escaped_slashes_and_line_breaks_in_base64_decode_as_base64(
    client: httpx.AsyncClient, users: Users, fake: FakeOpenAI, settings: Settings
) -> None:
    png = grainy_png(64, 64, seed=3)
    b64 = base64.encodebytes(png).decode()  # MIME style: a line break every 76 characters
    assert "/" in b64
    escaped = json.dumps(b64)[1:-1].replace("/", "\\/")  # "\n" and "\/" escapes
    fake.push(Reply(body=answer_body(escaped)))
    body = await generate(client, users.alice, model="gpt-image-1.5")
    assert body["response"]["data"][0]["content"]["digest"] == weave_digest(png)
    assert await file_content(client, users.alice, weave_digest(png)) == png


async def test_bad_base64_is_a_clear_error_and_nothing_is_kept(
    client: httpx.AsyncClient, users: Users, fake: FakeOpenAI, settings: Settings
) -> None:
    good = base64.b64encode(grainy_png(256, 256)).decode()
    fake.push(Reply(body=answer_body(good[:5000] + "*!" + good[5002:])))
    body = await generate(client, users.alice, model="gpt-image-1.5")
    assert body["response"]["error_type"] == "provider_error"
    assert body["response"]["error"] == "provider returned invalid base64 image data"
    call = await read_call(client, users.alice, body["weave_call_id"])
    assert call["output"] is None and call["exception"].startswith("provider_error:")
    assert await stored_names(settings) == []
    assert temp_files(settings) == []  # no image, no metadata, no temp file


async def test_one_bad_image_of_two_keeps_the_good_one(
    client: httpx.AsyncClient, users: Users, fake: FakeOpenAI, settings: Settings
) -> None:
    png = small_png(5)
    fake.push(Reply(body=answer_body(base64.b64encode(png).decode(), "AAA")))
    body = await generate(client, users.alice, model="gpt-image-1.5", n=2)
    response = body["response"]
    assert [i["content"]["digest"] for i in response["data"]] == [weave_digest(png)]
    assert [e["error"] for e in response["errors"]] == [
        "provider returned invalid base64 image data"
    ]
    names = await stored_names(settings)
    metadata = response["data"][0]["b64_json"]["files"]["metadata.json"]
    assert names == sorted([weave_digest(png), metadata])


@pytest.mark.parametrize("cut", ["inside the base64", "after the base64"])
async def test_an_answer_cut_off_is_a_clear_error_with_nothing_half_written(
    client: httpx.AsyncClient, users: Users, fake: FakeOpenAI, settings: Settings, cut: str
) -> None:
    full = answer_body(base64.b64encode(grainy_png(512, 512)).decode())
    sent = full[: len(full) // 2] if cut == "inside the base64" else full[:-3]
    # It declares the whole length and closes the connection after `sent`.
    fake.push(Reply(body=sent, headers={"Content-Length": str(len(full))}))
    body = await generate(client, users.alice, model="gpt-image-1.5")
    assert body["response"]["error_type"] == "timeout", body  # sent, then broke off
    assert "broke off before its answer" in body["response"]["error"]
    assert len(fake.requests) == 1  # it may have been billed: not asked again
    assert await stored_names(settings) == []
    assert temp_files(settings) == []


async def test_an_answer_that_ends_inside_its_json_is_malformed(
    client: httpx.AsyncClient, users: Users, fake: FakeOpenAI, settings: Settings
) -> None:
    b64 = base64.b64encode(small_png(2)).decode()
    fake.push(Reply(body=b'{"created":1,"data":[{"b64_json":"' + b64.encode()))
    body = await generate(client, users.alice, model="gpt-image-1.5")
    assert body["response"]["error_type"] == "provider_error"
    assert "malformed response from the provider" in body["response"]["error"]
    assert await stored_names(settings) == []
    assert temp_files(settings) == []
