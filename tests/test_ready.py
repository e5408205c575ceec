"""/ready, and what callers get while the database or the file store is down."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from imagegate.app import create_app
from imagegate.config import Settings
from imagegate.core import Imagegate
from imagegate.store import LocalFileStore
from imagegate.store.objectstore import s3_store
from tests.conftest import Backend, Users, basic

GENERATE = {"project_id": "alice/up", "inputs": {"model": "local/procedural", "prompt": "x"}}
# Not a timed assertion: only a bound so that a hang fails the test instead of stalling it.
HANG_GUARD = 60


async def test_ready_when_database_and_files_answer(client) -> None:
    res = await client.get("/ready")  # like /health, no key needed: probes have none
    assert res.status_code == 200 and res.json() == {"status": "ready"}


async def test_not_ready_while_the_file_store_is_down(
    client, settings: Settings, imagegate: Imagegate
) -> None:
    if isinstance(imagegate.files, LocalFileStore):
        imagegate.files.root.parent.mkdir(parents=True, exist_ok=True)
        imagegate.files.root.write_text("a file where the store's directory must be")
    else:
        imagegate.files.store = s3_store("s3://no-such-bucket/x", imagegate.settings.environ)
    res = await client.get("/ready")
    assert res.status_code == 503
    assert res.json() == {"status": "unavailable", "database": "ok", "files": "unavailable"}
    assert (await client.get("/health")).status_code == 200  # alive, just not ready


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_database_stopped_then_back(client, users: Users, backend: Backend) -> None:
    assert backend.pg is not None
    backend.pg.stop()
    try:
        ready = await asyncio.wait_for(client.get("/ready"), HANG_GUARD)
        assert ready.status_code == 503
        assert ready.json() == {"status": "unavailable", "database": "unavailable", "files": "ok"}
        res = await asyncio.wait_for(
            client.post("/image/create", json=GENERATE, headers=basic(users.alice)), HANG_GUARD
        )
        assert res.status_code == 503
        assert res.json() == {"detail": "database unavailable"}
        assert int(res.headers["retry-after"]) >= 1
        assert (await client.get("/health")).status_code == 200
    finally:
        backend.pg.start()
    # The same process recovers once the database is back: nothing to restart.
    assert (await client.get("/ready")).status_code == 200
    res = await client.post("/image/create", json=GENERATE, headers=basic(users.alice))
    assert res.status_code == 200 and res.json()["weave_call_id"]


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts TCP connections and never says a word, like a hung server."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield int(sock.getsockname()[1])


async def test_unresponsive_database_gives_a_prompt_503(tmp_path: Path, silent_port: int) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=f"postgresql+asyncpg://imagegate@127.0.0.1:{silent_port}/imagegate",
        database_timeout=0.5,
    )
    # No lifespan: a server cannot start (migrate) without its database, but one whose
    # database hangs later must still answer.
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        ready = await asyncio.wait_for(client.get("/ready"), HANG_GUARD)
        assert ready.status_code == 503
        assert ready.json()["database"] == "unavailable"
        res = await asyncio.wait_for(
            client.post("/image/create", json=GENERATE, headers=basic("ig_anykey")), HANG_GUARD
        )
        assert res.status_code == 503
        assert res.json() == {"detail": "database unavailable"}
        assert res.headers["retry-after"]
    await app.state.imagegate.close()
