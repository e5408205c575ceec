"""Shape of the fix: one error tree. Storage failures are mapped where they enter (a 503
to retry, never a 500), a storage failure while a generation keeps its images is a
storage error (not a provider's), recorded on the call and answered alike at both
doors, and the web gallery renders the same tree as the API."""

from __future__ import annotations

import asyncio
import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from imagegate.app import create_app
from imagegate.config import Settings
from tests.backends import failing_file_store
from tests.conftest import Backend, Users, basic
from tests.fake_openai import FakeOpenAI, Reply
from tests.web.conftest import sign_in

NOT_STORED = "the images could not be stored; the server log has details"


async def read_call(client: httpx.AsyncClient, key: str, project_id: str, call_id: str) -> Any:
    res = await client.post(
        "/call/read", json={"project_id": project_id, "id": call_id}, headers=basic(key)
    )
    assert res.status_code == 200, res.text
    return res.json()["call"]


@pytest.fixture
async def broken_files(settings: Settings) -> Any:
    """An app (and a client) whose file store fails alice/fails."""
    app = create_app(failing_file_store(settings, "alice/fails"))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        alice = await app.state.imagegate.accounts.create_key("alice")
        yield client, alice


async def test_images_not_stored_are_a_recorded_storage_error_503_at_the_openai_door(
    broken_files: tuple[httpx.AsyncClient, str],
) -> None:
    client, alice = broken_files
    res = await client.post(
        "/v1/images/generations",
        json={"model": "local/procedural", "prompt": "a red kite", "size": "256x256"},
        headers={"Authorization": f"Bearer {alice}", "OpenAI-Project": "alice/fails"},
    )
    # A storage outage, as everywhere in the tree: 503 with Retry-After, not a 500.
    assert res.status_code == 503, res.text
    assert res.headers["retry-after"]
    error = res.json()["error"]
    assert error["code"] == "storage_unavailable" and error["type"] == "server_error"
    assert error["message"] == NOT_STORED
    # Recorded on the call as a failed generation, by its storage kind (not a provider's).
    call = await read_call(client, alice, "alice/fails", res.headers["imagegate-call-id"])
    assert call["exception"] == f"storage_error: {NOT_STORED}"
    assert call["output"] is None
    assert call["summary"]["error"]["type"] == "storage_error"


async def test_images_not_stored_at_the_weave_door_answer_as_weave_does(
    broken_files: tuple[httpx.AsyncClient, str],
) -> None:
    client, alice = broken_files
    res = await client.post(
        "/image/create",
        json={
            "project_id": "alice/fails",
            "inputs": {"model": "local/procedural", "prompt": "x", "size": "256x256"},
        },
        headers=basic(alice),
    )
    # The Weave door answers every failed generation 200 + `response.error` (README), with
    # the same error_type and message the call records and the OpenAI door answers.
    assert res.status_code == 200
    body = res.json()
    assert body["response"] == {"error": NOT_STORED, "error_type": "storage_error"}
    call = await read_call(client, alice, "alice/fails", body["weave_call_id"])
    assert call["exception"] == f"storage_error: {NOT_STORED}"


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


async def test_a_failing_disk_delete_is_503_not_500(
    client: httpx.AsyncClient, users: Users, settings: Settings
) -> None:
    """Deleting a call purges its files: a delete the disk refuses is mapped too."""
    if settings.files_url:
        return  # the disk case; obstore's errors are mapped in every ObjectFileStore method
    res = await client.post(
        "/image/create",
        json={
            "project_id": "alice/purge",
            "inputs": {"model": "local/procedural", "prompt": "x", "size": "256x256"},
        },
        headers=basic(users.alice),
    )
    call_id = res.json()["weave_call_id"]
    image = await read_call(client, users.alice, "alice/purge", call_id)
    digest = image["output"]["data"][0]["b64_json"]["files"]["content"]
    path = settings.files_dir / "alice" / "purge" / digest[:2] / digest
    path.unlink()
    path.mkdir()  # unlinking a directory fails with an OSError, even as root
    try:
        res = await client.post(
            "/calls/delete",
            json={"project_id": "alice/purge", "call_ids": [call_id]},
            headers=basic(users.alice),
        )
    finally:
        shutil.rmtree(path)
    assert res.status_code == 503, res.text
    assert res.json() == {"detail": "file storage unavailable"}
    assert "retry-after" in res.headers


async def test_web_renders_api_errors_as_pages(app: FastAPI, users: Users) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as web:
        await sign_in(web, users.alice)
        res = await web.get("/ui/p/alice/x", params={"to": "9999-12-31"})
    assert res.status_code == 400
    assert res.headers["content-type"].startswith("text/html")


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_an_answer_under_way_tells_a_database_outage_as_the_tree_does(
    settings: Settings,
    backend: Backend,
    fake: FakeOpenAI,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An early 200 (keep-alive) cannot change its status any more: its body still says
    what the handlers would, a 503 "database unavailable", never the outage's reason
    (which names the database's host and port) nor an "internal error"."""
    assert backend.pg is not None
    fake.reset()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-error-tree-0123456789")
    models = tmp_path / "models.toml"
    models.write_text(
        f'[models."test/remote"]\nprovider = "openai"\nupstream_model = "remote"\n'
        f'base_url = "{fake.url}/v1"\nparams = ["size"]\nsizes = ["1024x1024"]\n'
    )
    app = create_app(replace(settings, models_file=models, keepalive_interval=0.2))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        alice = await app.state.imagegate.accounts.create_key("alice")
        fake.push(Reply(delay_s=4))
        answer = asyncio.create_task(
            client.post(
                "/image/create",
                json={"project_id": "alice/db", "inputs": {"model": "test/remote", "prompt": "x"}},
                headers={**basic(alice), "x-stainless-read-timeout": "30"},
            )
        )
        await asyncio.sleep(1)  # the 200 is under way; the provider is still working
        await asyncio.to_thread(backend.pg.stop)
        try:
            res = await asyncio.wait_for(answer, 60)
        finally:
            await asyncio.to_thread(backend.pg.start)
    assert res.status_code == 200
    response = json.loads(res.text)["response"]  # whitespace first: json skips it
    assert response == {
        "error": "database unavailable",
        "error_type": "server_error",
        "status_code": 503,
    }


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_a_stream_under_way_tells_a_database_outage_as_the_tree_does(
    settings: Settings,
    backend: Backend,
    fake: FakeOpenAI,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The OpenAI door's stream has sent its 200 and a partial image when recording the
    generation fails: the `error` event names the outage as the tree does."""
    assert backend.pg is not None
    fake.reset()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-error-tree-0123456789")
    models = tmp_path / "models.toml"
    models.write_text(
        f'[models."gpt-image-2.5-sunburst"]\nbase_url = "{fake.url}/v1"\nmax_attempts = 1\n'
    )
    app = create_app(replace(settings, models_file=models))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        alice = await app.state.imagegate.accounts.create_key("alice")
        fake.push(Reply(partial_delay_s=1.5))  # a partial at 1.5 s, the image at 3 s
        body = {
            "model": "gpt-image-2.5-sunburst",
            "prompt": "x",
            "stream": True,
            "partial_images": 1,
        }
        answer = asyncio.create_task(
            client.post(
                "/v1/images/generations",
                json=body,
                headers={"Authorization": f"Bearer {alice}", "OpenAI-Project": "alice/db"},
            )
        )
        await asyncio.sleep(0.8)  # the stream is under way; the provider is still working
        await asyncio.to_thread(backend.pg.stop)
        try:
            res = await asyncio.wait_for(answer, 60)
        finally:
            await asyncio.to_thread(backend.pg.start)
    assert res.status_code == 200
    events = [
        json.loads(line.removeprefix("data: "))
        for line in res.text.splitlines()
        if line.startswith("data: ")
    ]
    assert events[0]["type"] == "image_generation.partial_image"
    assert events[-1] == {
        "type": "error",
        "error": {
            "message": "database unavailable",
            "type": "server_error",
            "code": None,
            "param": None,
        },
    }
