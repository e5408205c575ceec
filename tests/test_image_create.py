"""POST /image/create through HTTP, on the embedded default (local/procedural)."""

from __future__ import annotations

import base64
import hashlib
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


async def file_content(
    client: httpx.AsyncClient, key: str, digest: str, project: str = "alice/demo"
) -> bytes:
    res = await client.post(
        "/file/content", json={"project_id": project, "digest": digest}, headers=basic(key)
    )
    assert res.status_code == 200, res.text
    assert res.headers["content-type"] == "application/octet-stream"
    return res.content


def assert_content_ref(ref: Any) -> None:
    assert ref["_type"] == "CustomWeaveType"
    assert ref["weave_type"] == {"type": "weave.type_wrappers.Content.content.Content"}
    assert set(ref["files"]) == {"content", "metadata.json"}


async def test_answers_and_records_weaves_shape(client, users: Users) -> None:
    res = await create(client, users.alice, prompt="a red fox in a blue forest", n=2)
    assert res.status_code == 200, res.text
    body = res.json()
    call_id = body["weave_call_id"]
    assert call_id and call_id[14] == "7"  # UUIDv7
    response = body["response"]
    assert response["model"] == "local/procedural"
    assert response["size"] == "1024x1024"
    assert len(response["data"]) == 2
    # As Weave answers: the Content reference *is* data[i].b64_json; no raw base64 anywhere.
    pngs = []
    for index, item in enumerate(response["data"]):
        ref = item["b64_json"]
        assert_content_ref(ref)
        png = await file_content(client, users.alice, ref["files"]["content"])
        pngs.append(png)
        img = Image.open(io.BytesIO(png))
        assert img.format == "PNG" and img.size == (1024, 1024)
        assert item["content"] == {
            "digest": weave_digest(png),
            "mimetype": "image/png",
            "size": len(png),
            "width": 1024,
            "height": 1024,
        }
        metadata = json.loads(
            await file_content(client, users.alice, ref["files"]["metadata.json"])
        )
        assert metadata["digest"] == hashlib.sha256(png).hexdigest()
        assert metadata["metadata"] == {"source_index": index, "_original_schema": "b64_json"}
        assert "url" not in item
    assert pngs[0] != pngs[1]
    assert len(res.text) < 4000  # references only: no image bytes in the answer
    # Usage keeps the provider's keys and adds Weave's chat-style names.
    usage = response["usage"]
    assert usage["prompt_tokens"] == usage["completion_tokens"] == usage["total_tokens"] == 0

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
    assert summary["weave"]["trace_name"] == "weave.image_generation_create"
    assert summary["weave"]["latency_ms"] >= 0
    assert summary["usage"]["local/procedural"]["requests"] == 1
    assert summary["usage"]["local/procedural"]["images"] == 2
    # Weave uses one dict twice: the stored output is the answer.
    assert call["output"] == response


async def test_recorded_seed_reproduces_the_images(client, users: Users) -> None:
    first = (await create(client, users.alice, prompt="green hills", n=2)).json()
    call = await read_call(client, users.alice, first["weave_call_id"])
    again = await create(
        client, users.alice, prompt="green hills", n=2, seed=call["inputs"]["seed"]
    )
    assert [d["b64_json"]["files"] for d in again.json()["response"]["data"]] == [
        d["b64_json"]["files"] for d in first["response"]["data"]
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
    png = await file_content(client, users.alice, item["b64_json"]["files"]["content"])
    assert Image.open(io.BytesIO(png)).size == (512, 256)
    assert item["content"]["width"] == 512 and item["content"]["height"] == 256


async def test_url_response_format_puts_the_content_at_url(client, users: Users) -> None:
    res = await create(client, users.alice, response_format="url", seed=11)
    body = res.json()
    item = body["response"]["data"][0]
    # Weave's url case: the Content reference replaces data[i].url.
    assert "b64_json" not in item
    assert_content_ref(item["url"])
    metadata = json.loads(
        await file_content(client, users.alice, item["url"]["files"]["metadata.json"])
    )
    assert metadata["metadata"] == {"source_index": 0, "_original_schema": "url"}
    # imagegate's addition: a stable signed link, in the answer only (it names the host).
    link = item["content"]["url"]
    call = await read_call(client, users.alice, body["weave_call_id"])
    assert call["output"]["data"][0]["url"] == item["url"]
    assert "url" not in call["output"]["data"][0]["content"]
    url = httpx.URL(link)
    assert url.path.startswith("/files/alice/demo/")
    image = await client.get(link)  # no API key: the signature is the credential
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/png"
    assert image.headers["x-content-type-options"] == "nosniff"
    assert weave_digest(image.content) == item["url"]["files"]["content"]
    assert metadata["digest"] == hashlib.sha256(image.content).hexdigest()
    # Same image, same URL.
    again = await create(client, users.alice, response_format="url", seed=11)
    assert again.json()["response"]["data"][0]["content"]["url"] == link
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
    # Nothing stored, so no Content to reference: the provider's raw base64.
    item = body["response"]["data"][0]
    png = base64.b64decode(item["b64_json"])
    assert Image.open(io.BytesIO(png)).format == "PNG"
    assert item["content"]["digest"] is None and item["content"]["size"] == len(png)
    assert body["response"]["model"] == "local/procedural"
    assert body["response"]["usage"]["total_tokens"] == 0
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
