"""/file/create and /file/content (and their /files/ aliases) over HTTP."""

from __future__ import annotations

import httpx
import pytest

from imagegate.digest import weave_digest
from tests.backends import stored_files
from tests.conftest import Users, basic

DATA = b"\x00hello weave\xff" * 100


async def upload(client: httpx.AsyncClient, key: str, path: str = "/file/create", **form: str):
    return await client.post(
        path,
        data={"project_id": "alice/files", **form},
        files={"file": ("blob.bin", DATA, "application/octet-stream")},
        headers=basic(key),
    )


@pytest.mark.parametrize("create_path", ["/file/create", "/files/create"])
@pytest.mark.parametrize("read_path", ["/file/content", "/files/content"])
async def test_round_trip(client, users: Users, create_path: str, read_path: str) -> None:
    res = await upload(client, users.alice, create_path)
    assert res.status_code == 200, res.text
    assert res.json() == {"digest": weave_digest(DATA)}
    got = await client.post(
        read_path,
        json={"project_id": "alice/files", "digest": weave_digest(DATA)},
        headers=basic(users.alice),
    )
    assert got.status_code == 200 and got.content == DATA


async def test_expected_digest_is_checked(client, users: Users, settings) -> None:
    ok = await upload(client, users.alice, expected_digest=weave_digest(DATA))
    assert ok.status_code == 200
    bad = await client.post(
        "/file/create",
        data={"project_id": "alice/other", "expected_digest": weave_digest(b"something else")},
        files={"file": ("blob.bin", DATA)},
        headers=basic(users.alice),
    )
    assert bad.status_code == 400
    assert "does not match" in bad.json()["detail"]
    assert await stored_files(settings, "alice/other") == {}


async def test_upload_needs_membership_and_valid_project(client, users: Users) -> None:
    assert (await upload(client, users.carol)).status_code == 403
    res = await client.post(
        "/file/create",
        data={"project_id": "../etc"},
        files={"file": ("blob.bin", DATA)},
        headers=basic(users.alice),
    )
    assert res.status_code == 422


async def test_missing_file_is_404(client, users: Users) -> None:
    res = await client.post(
        "/file/content",
        json={"project_id": "alice/files", "digest": "A" * 43},
        headers=basic(users.alice),
    )
    assert res.status_code == 404


async def test_same_bytes_are_stored_once(client, users: Users, settings) -> None:
    await upload(client, users.alice)
    await upload(client, users.alice)
    stored = await stored_files(settings, "alice/files")
    digest = weave_digest(DATA)
    assert stored == {f"alice/files/{digest[:2]}/{digest}": DATA}  # one copy, nothing partial
