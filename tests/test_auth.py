"""Authentication and tenancy: who may do what, and what a refusal gives away."""

from __future__ import annotations

import base64

import httpx
import pytest

from tests.conftest import Users, basic

GOOD = {"model": "local/procedural", "prompt": "a red fox", "seed": 1}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def generate(client: httpx.AsyncClient, key: str, project: str, prompt: str = "") -> dict:
    inputs = {**GOOD, "prompt": prompt} if prompt else GOOD
    res = await client.post(
        "/image/create", json={"project_id": project, "inputs": inputs}, headers=basic(key)
    )
    assert res.status_code == 200, res.text
    return res.json()


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Basic " + base64.b64encode(b"api:ig_wrong").decode()},
        {"Authorization": "Bearer ig_wrong"},
        {"Authorization": "Basic !!!notbase64"},
        {"Authorization": "Basic " + base64.b64encode(b"no-colon").decode()},
        {"Authorization": "Token something"},
    ],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/image/create"),
        ("POST", "/call/read"),
        ("POST", "/calls/stream_query"),
        ("POST", "/calls/query_stats"),
        ("POST", "/file/content"),
        ("GET", "/server_info"),
    ],
)
async def test_missing_or_wrong_credentials_get_401(client, users, headers, method, path) -> None:
    body = {"project_id": "alice/demo", "inputs": GOOD, "id": "x", "digest": "A" * 43}
    res = await client.request(
        method, path, json=body if method == "POST" else None, headers=headers
    )
    assert res.status_code == 401
    assert res.headers["www-authenticate"].startswith("Basic")
    assert res.json()["detail"] == "missing or invalid API key"


async def test_health_needs_no_credentials(client) -> None:
    res = await client.get("/health")
    assert res.status_code == 200 and res.json() == {"status": "ok"}


async def test_bearer_and_basic_both_work(client, users: Users) -> None:
    for headers in (basic(users.alice), bearer(users.alice)):
        res = await client.get("/server_info", headers=headers)
        assert res.status_code == 200
        assert res.json()["trace_server_version"]


async def test_revoked_key_stops_working(client, users: Users, imagegate) -> None:
    key = await imagegate.accounts.create_key("dave")
    assert (await client.get("/server_info", headers=basic(key))).status_code == 200
    assert await imagegate.accounts.revoke_key(key)
    assert (await client.get("/server_info", headers=basic(key))).status_code == 401
    assert not await imagegate.accounts.revoke_key(key)  # already revoked


async def test_keys_are_stored_only_as_hashes(users: Users, raw_database) -> None:
    raw = raw_database()
    assert b"alice" in raw  # the data is there to be searched
    for key in (users.alice, users.bob, users.carol):
        assert len(key) >= 43  # 32 random bytes
        assert key.encode() not in raw


async def test_non_member_gets_identical_403_for_existing_and_missing_projects(
    client, users: Users
) -> None:
    await generate(client, users.alice, "alice/exists")
    answers = []
    for project in ("alice/exists", "alice/never-made", "nobody/anything"):
        res = await client.post(
            "/image/create",
            json={"project_id": project, "inputs": GOOD},
            headers=basic(users.carol),
        )
        assert res.status_code == 403
        answers.append(res.json()["detail"].replace(project, "<p>"))
    assert len(set(answers)) == 1


async def test_other_users_cannot_read_calls_or_files(client, users: Users) -> None:
    body = await generate(client, users.alice, "alice/private")
    call_id = body["weave_call_id"]
    digest = body["response"]["data"][0]["content"]["digest"]

    # Carol, by id and digest, in Alice's project: 403.
    for path, payload in (
        ("/call/read", {"project_id": "alice/private", "id": call_id}),
        ("/file/content", {"project_id": "alice/private", "digest": digest}),
        ("/files/content", {"project_id": "alice/private", "digest": digest}),
        ("/calls/stream_query", {"project_id": "alice/private"}),
        ("/calls/query_stats", {"project_id": "alice/private"}),
    ):
        res = await client.post(path, json=payload, headers=basic(users.carol))
        assert res.status_code == 403, path

    # Carol, by id and digest, through her own project: nothing there.
    await generate(client, users.carol, "carol/mine", prompt="a different picture")
    res = await client.post(
        "/call/read", json={"project_id": "carol/mine", "id": call_id}, headers=basic(users.carol)
    )
    assert res.status_code == 200 and res.json() == {"call": None}
    res = await client.post(
        "/file/content",
        json={"project_id": "carol/mine", "digest": digest},
        headers=basic(users.carol),
    )
    assert res.status_code == 404
    res = await client.post(
        "/calls/stream_query",
        json={"project_id": "carol/mine", "filter": {"call_ids": [call_id]}},
        headers=basic(users.carol),
    )
    assert res.text == ""

    # Alice still reads her own.
    res = await client.post(
        "/call/read",
        json={"project_id": "alice/private", "id": call_id},
        headers=basic(users.alice),
    )
    assert res.json()["call"]["id"] == call_id
