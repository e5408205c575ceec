"""Every setting, through a real `imagegate serve` configured by its environment alone
(no flag but --port), checked by what the server then does. What is shared between
processes (S3, replicas, the CLI, spend) is in test_deployment_shared.py."""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from imagegate.config import Settings
from imagegate.digest import weave_digest
from imagegate.recovery import INTERRUPTED
from imagegate.urls import file_signature
from tests.backends import stored_files
from tests.conftest import Backend, LiveServer, start_server, stop_server
from tests.deploy import KEY, PNG, PROJECT, create, models_toml, new_key
from tests.fake_openai import FakeOpenAI, Gate, Reply

# --- every setting from the environment --------------------------------------------


@dataclass
class Configured:
    server: LiveServer
    env: dict[str, str]
    backend: Backend
    files: Settings  # where the server's files are, to look at them


@pytest.fixture(scope="module")
def configured(
    tmp_path_factory: pytest.TempPathFactory, module_backend: Backend, fake: FakeOpenAI
) -> Iterator[Configured]:
    """One server configured through its environment alone (no flag but --port)."""
    root = tmp_path_factory.mktemp("configured")
    models = root / "models.toml"
    models.write_text(models_toml(fake))
    files_url = module_backend.files_url or f"file://{root / 'elsewhere'}"
    env = {
        **module_backend.env,
        "IMAGEGATE_DATA_DIR": str(root / "env-data"),
        "IMAGEGATE_FILES_URL": files_url,
        "IMAGEGATE_PUBLIC_URL": "https://images.example.test/gate",
        "IMAGEGATE_MODELS": str(models),
        "IMAGEGATE_MAX_REQUEST_BYTES": "20000",
        "IMAGEGATE_MAX_UPLOAD_BYTES": "3000",
        "IMAGEGATE_IDEMPOTENCY_TTL": "600",
        "IMAGEGATE_IDEMPOTENCY_WAIT": "0.5",
        "IMAGEGATE_IDEMPOTENCY_LEASE": "120",
        "IMAGEGATE_SECRET_KEY": "deploy-secret",
        "IMAGEGATE_METRICS_TOKEN": "scrape-token",
        "OPENAI_API_KEY": KEY,
        "OPENAI_BASE_URL": f"{fake.url}/v1",
    }
    server = start_server(None, env)
    yield Configured(server, env, module_backend, Settings(data_dir=root, files_url=files_url))
    stop_server(server)


@pytest.fixture
async def admin(configured: Configured) -> Any:
    server = configured.server
    async with httpx.AsyncClient(
        base_url=server.url, auth=("api", server.admin_key), timeout=60
    ) as client:
        yield client


def db_rows(configured: Configured, sql: str) -> list[list[str]]:
    """Rows of `sql` straight from the server's database (SQLite file or PostgreSQL)."""
    backend = configured.backend
    if backend.pg is not None and backend.database is not None:
        out = backend.pg.psql(sql, backend.database)
        return [line.split("|") for line in out.splitlines() if line]
    path = Path(configured.env["IMAGEGATE_DATA_DIR"]) / "imagegate.db"
    with sqlite3.connect(path) as conn:
        return [[str(v) for v in row] for row in conn.execute(sql)]


async def test_data_dir_and_database_from_the_environment(
    configured: Configured, admin: httpx.AsyncClient
) -> None:
    assert configured.server.admin_key.startswith("ig_")
    res = await create(admin)
    assert res.status_code == 200 and "data" in res.json()["response"], res.text
    call_id = res.json()["weave_call_id"]
    # The call is in the database the environment named.
    assert db_rows(configured, f"SELECT id FROM calls WHERE id = '{call_id}'") == [[call_id]]
    sqlite_file = Path(configured.env["IMAGEGATE_DATA_DIR"]) / "imagegate.db"
    assert sqlite_file.exists() == (configured.backend.pg is None)
    # A CLI command finds the same data through the same environment.
    key = new_key("erin", "studio", configured.env)
    res = httpx.post(
        f"{configured.server.url}/calls/query_stats",
        json={"project_id": "studio/p"},
        auth=("api", key),
    )
    assert res.status_code == 200, res.text


async def test_files_public_url_and_secret_from_the_environment(
    configured: Configured, admin: httpx.AsyncClient, fake: FakeOpenAI
) -> None:
    res = await create(admin, response_format="url")
    assert res.status_code == 200, res.text
    (item,) = res.json()["response"]["data"]
    link = item["content"]["url"]  # the signed link, beside Weave's Content reference
    url = urlsplit(link)
    # IMAGEGATE_PUBLIC_URL is the base of every image URL handed out.
    assert link.startswith(f"https://images.example.test/gate/files/{PROJECT}/")
    digest = item["content"]["digest"]
    # Signed with the key derived from IMAGEGATE_SECRET_KEY (no IMAGEGATE_SIGNING_KEY set).
    query = parse_qs(url.query)
    (sig,), (expires,) = query["sig"], query["exp"]
    signing_key = Settings(secret_key="deploy-secret").signing_key()
    assert sig == file_signature(signing_key, PROJECT, digest, int(expires))
    # Behind the public URL is this server: the same path and query fetch the image.
    path = url.path.removeprefix("/gate") + "?" + url.query
    image = httpx.get(configured.server.url + path)
    assert image.status_code == 200 and image.content.startswith(PNG)
    assert weave_digest(image.content) == digest
    # IMAGEGATE_FILES_URL: the bytes are where it points.
    stored = await stored_files(configured.files, PROJECT)
    assert f"{PROJECT}/{digest[:2]}/{digest}" in stored


async def test_models_and_openai_settings_from_the_environment(
    configured: Configured, admin: httpx.AsyncClient, fake: FakeOpenAI
) -> None:
    fake.reset()
    models = {m["name"] for m in (await admin.get("/models")).json()["models"]}
    assert {"test/priced", "test/env-base-url"} <= models  # IMAGEGATE_MODELS
    res = await create(admin, model="test/env-base-url")
    assert "data" in res.json()["response"], res.text
    (sent,) = fake.requests
    assert sent.body["model"] == "from-env"  # OPENAI_BASE_URL
    assert sent.headers["authorization"] == f"Bearer {KEY}"  # OPENAI_API_KEY


def declared_too_large(server: LiveServer, path: str, size: int) -> bytes:
    """The answer to headers declaring a `size`-byte body (none of it is sent: over
    httpx, a body the server refuses unread can reset the connection before the
    answer is read)."""
    host, port = server.url.removeprefix("http://").split(":")
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {server.admin_key}\r\nContent-Length: {size}\r\n\r\n"
    )
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head.encode())
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    return reply


async def test_body_limits_from_the_environment(
    configured: Configured, admin: httpx.AsyncClient
) -> None:
    server = configured.server
    under = await create(admin, prompt="x" * 15_000)
    assert under.status_code == 200
    over = declared_too_large(server, "/image/create", 25_000)
    assert over.startswith(b"HTTP/1.1 413") and b"limit of 20000 bytes" in over, over

    upload = await admin.post(
        "/file/create", data={"project_id": PROJECT}, files={"file": ("a.bin", b"x" * 1000)}
    )
    assert upload.status_code == 200, upload.text
    over = declared_too_large(server, "/file/create", 5000)
    assert over.startswith(b"HTTP/1.1 413") and b"limit of 3000 bytes" in over, over


async def test_metrics_token_from_the_environment(configured: Configured) -> None:
    url = f"{configured.server.url}/metrics"
    assert httpx.get(url).status_code == 401
    res = httpx.get(url, headers={"Authorization": "Bearer scrape-token"})
    assert res.status_code == 200 and "imagegate_http_requests_total" in res.text


async def test_idempotency_settings_from_the_environment(
    configured: Configured, admin: httpx.AsyncClient, fake: FakeOpenAI
) -> None:
    fake.reset()
    gate = Gate()
    fake.push(Reply(gate=gate))
    key = "deploy-idem-1"
    headers = {"Idempotency-Key": key}
    first = asyncio.create_task(create(admin, headers=headers))
    try:
        await gate.until_held()
        # IMAGEGATE_IDEMPOTENCY_WAIT=0.5: the repeat gives up with 409 after half a
        # second (the default would hold it for 30).
        started = time.monotonic()
        busy = await create(admin, headers=headers)
        waited = time.monotonic() - started
        assert busy.status_code == 409, busy.text
        assert 0.4 < waited < 20, waited
        # TTL and lease, as the server wrote them into the key's row.
        ((created, lease_until, expires),) = db_rows(
            configured,
            f"SELECT created_at, lease_until, expires_at FROM idempotency_keys WHERE key = '{key}'",
        )
        created_at = datetime.fromisoformat(created)
        lease = datetime.fromisoformat(lease_until) - created_at
        ttl = datetime.fromisoformat(expires) - created_at
        assert timedelta(seconds=119) < lease < timedelta(seconds=121), lease
        assert ttl == timedelta(seconds=600), ttl
    finally:
        gate.open()
    assert (await first).status_code == 200


# --- database timeout and recovery from the environment ------------------------------


class Blackhole:
    """A TCP listener that accepts and never answers, noting how long each client
    waited before it gave up and closed."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.waits: list[float] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._hold, args=(conn,), daemon=True).start()

    def _hold(self, conn: socket.socket) -> None:
        accepted = time.monotonic()
        with conn:
            while conn.recv(65536):  # the client's startup message, unanswered
                pass
        self.waits.append(time.monotonic() - accepted)

    def close(self) -> None:
        self.sock.close()


def test_database_timeout_from_the_environment(tmp_path: Path) -> None:
    """IMAGEGATE_DATABASE_TIMEOUT=1: a database that never answers is given up on after
    a second (the default is 5), and the server says why it cannot start."""
    hole = Blackhole()
    env = {
        "IMAGEGATE_DATABASE_URL": f"postgresql+asyncpg://u@127.0.0.1:{hole.port}/db",
        "IMAGEGATE_DATABASE_TIMEOUT": "1",
    }
    try:
        with pytest.raises(RuntimeError, match="server exited") as failed:
            start_server(tmp_path / "data", env)
    finally:
        hole.close()
    assert "cannot connect to the database" in str(failed.value)
    assert hole.waits, "the server never tried the database"
    assert 0.8 < hole.waits[0] < 3.5, hole.waits


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_stale_call_settings_from_the_environment(
    tmp_path: Path, backend: Backend, fake: FakeOpenAI
) -> None:
    """A replica killed mid-generation: a sibling started with IMAGEGATE_STALE_CALL_AFTER=2
    and IMAGEGATE_RECOVERY_INTERVAL=0.5 ends its call as interrupted once the call is two
    seconds old, while running (the defaults: 15 minutes, every minute)."""
    fake.reset()
    models = tmp_path / "models.toml"
    models.write_text(models_toml(fake))
    env = {**backend.env, "IMAGEGATE_MODELS": str(models), "OPENAI_API_KEY": KEY,
           "IMAGEGATE_SECRET_KEY": "shared"}  # fmt: skip
    sibling = start_server(
        tmp_path / "sibling",
        {**env, "IMAGEGATE_STALE_CALL_AFTER": "2", "IMAGEGATE_RECOVERY_INTERVAL": "0.5"},
    )
    doomed = start_server(tmp_path / "doomed", env)
    key = sibling.admin_key or doomed.admin_key
    gate = Gate()
    fake.push(Reply(gate=gate))
    try:
        async with httpx.AsyncClient(auth=("api", key), timeout=60) as client:
            held = asyncio.create_task(client.post(
                f"{doomed.url}/image/create",
                json={"project_id": PROJECT, "inputs": {"model": "test/priced", "prompt": "x"}},
            ))  # fmt: skip
            await gate.until_held()
            doomed.process.kill()
            with pytest.raises(httpx.TransportError):
                await held
            deadline = time.monotonic() + 30
            while True:
                res = await client.post(
                    f"{sibling.url}/calls/stream_query", json={"project_id": PROJECT}
                )
                (call,) = [json.loads(line) for line in res.text.splitlines()]
                if call["exception"] is not None or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
    finally:
        gate.open()
        stop_server(sibling)
        doomed.process.kill()
    assert call["exception"] == INTERRUPTED, call
    lived = datetime.fromisoformat(call["ended_at"]) - datetime.fromisoformat(call["started_at"])
    assert lived >= timedelta(seconds=2), lived  # not before it was stale
