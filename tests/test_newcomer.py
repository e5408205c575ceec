"""What a newcomer meets first: clear messages for wrong methods and bodies, and models
offered only when they can be used."""

from __future__ import annotations

import httpx

from imagegate.core import Imagegate
from tests.conftest import Users, basic


async def test_wrong_method_says_what_to_use(client: httpx.AsyncClient, users: Users) -> None:
    res = await client.get("/image/create", headers=basic(users.alice))
    assert res.status_code == 405
    assert res.json()["detail"] == "GET is not allowed on /image/create: use POST with a JSON body"
    assert res.headers["allow"] == "POST"


async def test_a_body_that_is_not_json_says_so(client: httpx.AsyncClient, users: Users) -> None:
    res = await client.post("/image/create", content=b"prompt=a fox", headers=basic(users.alice))
    assert res.status_code == 422
    (error,) = res.json()["detail"]
    assert error["msg"].startswith("the body must be JSON")
    assert "input" not in error


async def test_project_id_message_is_plain(client: httpx.AsyncClient, users: Users) -> None:
    res = await client.post(
        "/image/create",
        json={"project_id": "nope", "inputs": {"model": "local/procedural", "prompt": "x"}},
        headers=basic(users.alice),
    )
    (error,) = res.json()["detail"]
    assert error["msg"] == "project_id must be 'entity/project', got 'nope'"


async def test_models_say_which_have_credentials(
    client: httpx.AsyncClient, users: Users, imagegate: Imagegate
) -> None:
    imagegate.generation.environ = {}  # no server-wide provider keys
    models = (await client.get("/models", headers=basic(users.carol))).json()["models"]
    flags = {m["name"]: m["credentials"] for m in models}
    assert flags["local/procedural"] is True and flags["gpt-image-2"] is False
    unknown = await client.post(
        "/image/create",
        json={"project_id": "carol/x", "inputs": {"model": "dall-e-9", "prompt": "x"}},
        headers=basic(users.carol),
    )
    message = unknown.json()["detail"][0]["msg"]
    assert message == "unknown model 'dall-e-9'; available models: local/procedural"
    # A team's own key makes its models usable for that team's members only.
    await imagegate.secrets.set("acme", "OPENAI_API_KEY", "sk-acme-0123456789")
    alice = (await client.get("/models", headers=basic(users.alice))).json()["models"]
    assert {m["name"]: m["credentials"] for m in alice}["gpt-image-2"] is True
    carol = (await client.get("/models", headers=basic(users.carol))).json()["models"]
    assert {m["name"]: m["credentials"] for m in carol}["gpt-image-2"] is False
