"""The gallery's Edit action (an image of a generation as input, an optional mask, a
prompt) and the generate form's stream of partial images, over HTTP."""

from __future__ import annotations

import base64
import io
import json
import re
from typing import Any

from PIL import Image

from imagegate.core import Imagegate
from tests.conftest import Users
from tests.web.conftest import Client, Generate, csrf_of, token_for


def digest_of(call: dict[str, Any]) -> str:
    return str(call["output"]["data"][0]["content"]["digest"])


def hole_mask(size: tuple[int, int], hole: int = 64) -> bytes:
    mask = Image.new("RGBA", size, (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (0, 0, hole, hole))
    buf = io.BytesIO()
    mask.save(buf, format="PNG")
    return buf.getvalue()


async def test_edit_action_makes_a_recorded_edit(
    browser_for: Client, users: Users, generate: Generate, imagegate: Imagegate
) -> None:
    alice = await browser_for(users.alice)
    source = await generate(users.alice, "alice/demo", "a red fox")
    digest = digest_of(source)
    detail = await alice.get(f"/ui/p/alice/demo/calls/{source['id']}")
    edit_link = f"/ui/p/alice/demo/edit?image={digest}"
    assert f'href="{edit_link}"' in detail.text

    form = await alice.get(edit_link)
    assert form.status_code == 200 and f'value="{digest}"' in form.text
    res = await alice.post(
        "/ui/p/alice/demo/edit",
        data={
            "csrf_token": csrf_of(form.text),
            "image": digest,
            "model": "local/procedural",
            "prompt": "a blue moon",
        },
        files={"mask": ("mask.png", hole_mask((256, 256)), "image/png")},
    )
    assert res.status_code == 303, res.text
    call_id = res.headers["location"].rsplit("/", 1)[1]
    call = await imagegate.calls.read("alice/demo", call_id)
    assert call is not None and call["op_name"] == "weave.image_edit_create"
    assert call["inputs"]["image"][0]["files"]["content"] == digest
    original = await imagegate.files.get("alice/demo", digest)
    edited = await imagegate.files.get("alice/demo", digest_of(call))
    assert original is not None and edited is not None
    before = Image.open(io.BytesIO(original)).convert("RGB")
    after = Image.open(io.BytesIO(edited)).convert("RGB")
    assert after.getpixel((200, 200)) == before.getpixel((200, 200))  # outside the hole
    assert after.getpixel((10, 10)) != before.getpixel((10, 10))  # repainted

    page = await alice.get(res.headers["location"])
    assert "Edited from" in page.text and digest in page.text
    gallery = await alice.get("/ui/p/alice/demo")
    assert call_id in gallery.text  # edits are in the gallery with the generations


async def test_edit_errors_are_shown_on_the_form(
    browser_for: Client, users: Users, generate: Generate
) -> None:
    alice = await browser_for(users.alice)
    digest = digest_of(await generate(users.alice, "alice/demo", "a red fox"))
    form = await alice.get(f"/ui/p/alice/demo/edit?image={digest}")
    res = await alice.post(
        "/ui/p/alice/demo/edit",
        data={
            "csrf_token": csrf_of(form.text),
            "image": digest,
            "model": "local/procedural",
            "prompt": "x",
        },
        files={"mask": ("mask.png", hole_mask((100, 100)), "image/png")},
    )
    assert res.status_code == 422 and "same size" in res.text
    # Another team's image (or no image) is not found; no CSRF token, no edit.
    bob = await browser_for(users.bob)
    assert (await bob.get(f"/ui/p/alice/demo/edit?image={digest}")).status_code == 404
    res = await alice.post(
        "/ui/p/alice/demo/edit",
        data={"image": digest, "model": "local/procedural", "prompt": "x"},
    )
    assert res.status_code == 403


async def test_generate_form_streams_partial_images(
    browser_for: Client, users: Users, imagegate: Imagegate
) -> None:
    alice = await browser_for(users.alice)
    form = await alice.get("/ui/p/alice/demo/generate")
    assert 'data-stream="1"' in form.text  # local/procedural streams
    res = await alice.post(
        "/ui/p/alice/demo/generate",
        data={
            "csrf_token": await token_for(alice, "/ui/p/alice/demo/generate"),
            "model": "local/procedural",
            "prompt": "violet waves",
            "n": "1",
            "size": "256x256",
        },
        headers={"Accept": "text/event-stream"},
    )
    assert res.status_code == 200 and res.headers["content-type"].startswith("text/event-stream")
    events = [
        (m[1], json.loads(m[2])) for m in re.finditer(r"event: (\w+)\ndata: (.*)\n\n", res.text)
    ]
    assert [name for name, _ in events] == ["partial", "partial", "done"]
    for _, data in events[:2]:
        assert data["src"].startswith("data:image/png;base64,")
        png = base64.b64decode(data["src"].split(",", 1)[1])
        assert Image.open(io.BytesIO(png)).size == (256, 256)
    url = events[-1][1]["url"]
    page = await alice.get(url)
    assert "Partial images" in page.text
    call = await imagegate.calls.read("alice/demo", url.rsplit("/", 1)[1])
    assert call is not None and len(call["output"]["partial_images"]) == 2


async def test_generate_stream_with_bad_input_is_a_422(browser_for: Client, users: Users) -> None:
    alice = await browser_for(users.alice)
    res = await alice.post(
        "/ui/p/alice/demo/generate",
        data={
            "csrf_token": await token_for(alice, "/ui/p/alice/demo/generate"),
            "model": "local/procedural",
            "prompt": "x",
            "n": "1",
            "size": "9x9",
        },
        headers={"Accept": "text/event-stream"},
    )
    assert res.status_code == 422 and "size" in res.json()["error"]
