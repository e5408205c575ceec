"""POST /image/create through HTTP, on the embedded default (local/procedural)."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import httpx
from PIL import Image

from imagegate.digest import weave_digest
from tests.backends import stored_files
from tests.conftest import Users, basic


async def create(
    client: httpx.AsyncClient, key: str, project: str = "alice/demo", **inputs: Any
) -> httpx.Response:
    body = {"project_id": project, "inputs": {"model": "local/procedural", "prompt": "a red fox"}}
    track = inputs.pop("track_llm_call", None)
    if track is not None:
        body["track_llm_call"] = track
    body["inputs"].update(inputs)
    return await client.post("/image/create", json=body, headers=basic(key))


async def read_call(client: httpx.AsyncClient, key: str, call_id: str, project: str = "alice/demo"):
    res = await client.post(
        "/call/read", json={"project_id": project, "id": call_id}, headers=basic(key)
    )
    assert res.status_code == 200, res.text
    return res.json()["call"]


async def test_generates_png_as_base64_and_records_call(client, users: Users) -> None:
    res = await create(client, users.alice, prompt="a red fox in a blue forest", n=2)
    assert res.status_code == 200, res.text
    body = res.json()
    call_id = body["weave_call_id"]
    assert call_id and call_id[14] == "7"  # UUIDv7
    response = body["response"]
    assert response["size"] == "1024x1024"
    assert len(response["data"]) == 2
    pngs = [base64.b64decode(item["b64_json"]) for item in response["data"]]
    assert pngs[0] != pngs[1]
    for png, item in zip(pngs, response["data"], strict=True):
        img = Image.open(io.BytesIO(png))
        assert img.format == "PNG" and img.size == (1024, 1024)
        assert item["content"] == {
            "digest": weave_digest(png),
            "mimetype": "image/png",
            "size": len(png),
            "width": 1024,
            "height": 1024,
        }

    call = await read_call(client, users.alice, call_id)
    assert call["op_name"] == "weave.image_generation_create"
    assert call["project_id"] == "alice/demo"
    assert call["trace_id"] and call["parent_id"] is None
    assert call["started_at"].endswith("+00:00") and call["ended_at"] >= call["started_at"]
    assert call["exception"] is None
    inputs = call["inputs"]
    assert inputs["model"] == "local/procedural" and inputs["n"] == 2
    assert inputs["size"] == "1024x1024" and inputs["response_format"] == "b64_json"
    assert isinstance(inputs["seed"], int)  # drawn and recorded: reproducible
    summary = call["summary"]
    assert summary["weave"]["status"] == "success"
    assert summary["weave"]["latency_ms"] >= 0
    assert summary["usage"]["local/procedural"]["requests"] == 1
    assert summary["usage"]["local/procedural"]["images"] == 2

    # Output holds Content references, not base64, and both files are stored.
    assert "b64_json" not in json.dumps(call["output"])
    for png, item in zip(pngs, call["output"]["data"], strict=True):
        ref = item["image"]
        assert ref["_type"] == "CustomWeaveType"
        assert ref["weave_type"]["type"] == "weave.type_wrappers.Content.content.Content"
        assert ref["files"]["content"] == weave_digest(png)
        stored = await client.post(
            "/file/content",
            json={"project_id": "alice/demo", "digest": ref["files"]["content"]},
            headers=basic(users.alice),
        )
        assert stored.status_code == 200 and stored.content == png
        assert stored.headers["content-type"] == "application/octet-stream"
        meta = await client.post(
            "/file/content",
            json={"project_id": "alice/demo", "digest": ref["files"]["metadata.json"]},
            headers=basic(users.alice),
        )
        metadata = json.loads(meta.content)
        assert metadata["mimetype"] == "image/png" and metadata["size"] == len(png)
        assert metadata["digest"] == weave_digest(png) and metadata["extension"] == ".png"


async def test_recorded_seed_reproduces_the_images(client, users: Users) -> None:
    first = (await create(client, users.alice, prompt="green hills", n=2)).json()
    call = await read_call(client, users.alice, first["weave_call_id"])
    again = await create(
        client, users.alice, prompt="green hills", n=2, seed=call["inputs"]["seed"]
    )
    assert [d["content"]["digest"] for d in again.json()["response"]["data"]] == [
        d["content"]["digest"] for d in first["response"]["data"]
    ]
    other = await create(
        client, users.alice, prompt="green hills", n=1, seed=call["inputs"]["seed"] + 1
    )
    assert (
        other.json()["response"]["data"][0]["content"]["digest"]
        != (first["response"]["data"][0]["content"]["digest"])
    )


async def test_size_is_honoured(client, users: Users) -> None:
    res = await create(client, users.alice, size="512x256", seed=3)
    item = res.json()["response"]["data"][0]
    assert Image.open(io.BytesIO(base64.b64decode(item["b64_json"]))).size == (512, 256)
    assert item["content"]["width"] == 512 and item["content"]["height"] == 256


async def test_url_response_format_serves_a_stable_signed_url(client, users: Users) -> None:
    res = await create(client, users.alice, response_format="url", seed=11)
    item = res.json()["response"]["data"][0]
    assert "b64_json" not in item
    url = httpx.URL(item["url"])
    assert url.path.startswith("/files/alice/demo/")
    image = await client.get(item["url"])  # no API key: the signature is the credential
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/png"
    assert image.headers["x-content-type-options"] == "nosniff"
    assert weave_digest(image.content) == item["content"]["digest"]
    # Same image, same URL.
    again = await create(client, users.alice, response_format="url", seed=11)
    assert again.json()["response"]["data"][0]["url"] == item["url"]
    # A forged signature, or none and no key, is refused.
    forged = await client.get(url.copy_with(params={"sig": "A" * 24}))
    assert forged.status_code == 401
    unsigned = await client.get(url.copy_with(query=None))
    assert unsigned.status_code == 401
    with_key = await client.get(url.copy_with(query=None), headers=basic(users.alice))
    assert with_key.status_code == 200 and with_key.content == image.content
    other_user = await client.get(url.copy_with(query=None), headers=basic(users.carol))
    assert other_user.status_code == 403


async def test_untracked_generation_stores_nothing(client, users: Users, settings) -> None:
    res = await create(client, users.alice, project="alice/quiet", track_llm_call=False)
    assert res.status_code == 200
    body = res.json()
    assert body["weave_call_id"] is None
    assert body["response"]["data"][0]["b64_json"]
    assert body["response"]["data"][0]["content"]["digest"] is None
    stats = await client.post(
        "/calls/query_stats", json={"project_id": "alice/quiet"}, headers=basic(users.alice)
    )
    assert stats.json()["count"] == 0
    assert await stored_files(settings, "alice/quiet") == {}
    url = await create(client, users.alice, response_format="url", track_llm_call=False)
    assert url.status_code == 422


async def test_unknown_input_fields_are_ignored_not_echoed(client, users: Users) -> None:
    res = await create(client, users.alice, favourite_colour="teal", seed=1)
    assert res.status_code == 200
    call = await read_call(client, users.alice, res.json()["weave_call_id"])
    assert "favourite_colour" not in call["inputs"]
    assert "favourite_colour" not in res.text


async def test_client_sent_wb_user_id_is_ignored(client, users: Users, imagegate) -> None:
    res = await client.post(
        "/image/create",
        json={
            "project_id": "alice/demo",
            "wb_user_id": "someone-else",
            "inputs": {"model": "local/procedural", "prompt": "x"},
        },
        headers=basic(users.alice),
    )
    call = await read_call(client, users.alice, res.json()["weave_call_id"])
    alice = await imagegate.accounts.authenticate(users.alice)
    assert call["wb_user_id"] == alice.user_id != "someone-else"


async def test_json_body_without_content_type_is_accepted(client, users: Users) -> None:
    body = {"project_id": "alice/demo", "inputs": {"model": "local/procedural", "prompt": "x"}}
    req = client.build_request(
        "POST", "/image/create", content=json.dumps(body).encode(), headers=basic(users.alice)
    )
    assert "content-type" not in req.headers
    res = await client.send(req)
    assert res.status_code == 200, res.text
    assert res.json()["weave_call_id"]


async def test_team_project_is_shared_by_members(client, users: Users) -> None:
    res = await create(client, users.alice, project="acme/shared")
    call = await read_call(client, users.bob, res.json()["weave_call_id"], project="acme/shared")
    assert call is not None and call["id"] == res.json()["weave_call_id"]


async def test_openapi_matches_the_weave_spec(client) -> None:
    spec = (await client.get("/openapi.json")).json()
    op = spec["paths"]["/image/create"]["post"]
    assert op["operationId"] == "image_create_image_create_post"
    assert op["security"] == [{"HTTPBasic": []}]
    assert op["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/ImageGenerationCreateReq"
    )
    assert op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/ImageGenerationCreateRes"
    )
    assert op["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/HTTPValidationError"
    )
    schemas = spec["components"]["schemas"]
    req = schemas["ImageGenerationCreateReq"]
    assert set(req["required"]) == {"project_id", "inputs"}
    assert {"project_id", "inputs", "wb_user_id", "track_llm_call"} <= set(req["properties"])
    assert req["properties"]["track_llm_call"]["default"] is True
    res = schemas["ImageGenerationCreateRes"]
    assert res["required"] == ["response"]
    assert set(res["properties"]) == {"response", "weave_call_id"}
    inputs = schemas["ImageGenerationRequestInputs"]
    assert set(inputs["required"]) == {"model", "prompt"}
    assert {"model", "prompt", "n", "size", "seed", "response_format"} <= set(inputs["properties"])
    assert spec["components"]["securitySchemes"]["HTTPBasic"] == {"type": "http", "scheme": "basic"}
    assert "HTTPValidationError" in schemas and "ValidationError" in schemas
