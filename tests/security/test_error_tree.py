"""Shape of the fix: storage failures are mapped where they enter (a 503 to retry, never
a 500), and the web gallery renders the same error tree as the API."""

from __future__ import annotations

import shutil

import httpx
from fastapi import FastAPI

from imagegate.config import Settings
from tests.conftest import Users, basic
from tests.web.conftest import sign_in


async def test_a_failing_disk_read_is_503_not_500(
    client: httpx.AsyncClient, users: Users, settings: Settings
) -> None:
    if settings.files_url:
        return  # the disk case; the object store's mapping is tested in test_store.py
    res = await client.post(
        "/file/create",
        data={"project_id": "alice/disk"},
        files={"file": ("f", b"some bytes")},
        headers=basic(users.alice),
    )
    digest = res.json()["digest"]
    path = settings.files_dir / "alice" / "disk" / digest[:2] / digest
    path.unlink()
    path.mkdir()  # reading it now fails with an OSError other than "not found"
    try:
        res = await client.post(
            "/file/content",
            json={"project_id": "alice/disk", "digest": digest},
            headers=basic(users.alice),
        )
    finally:
        shutil.rmtree(path)
    assert res.status_code == 503
    assert res.json() == {"detail": "file storage unavailable"}
    assert "retry-after" in res.headers


async def test_web_renders_api_errors_as_pages(app: FastAPI, users: Users) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as web:
        await sign_in(web, users.alice)
        res = await web.get("/ui/p/alice/x", params={"to": "9999-12-31"})
    assert res.status_code == 400
    assert res.headers["content-type"].startswith("text/html")
