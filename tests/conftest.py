"""Shared fixtures: an app on a temp data dir, an HTTP client for it, users and keys,
and a real `imagegate serve` process for tests that need one.

Every test that uses `settings` (so `app`, `client`, ...) runs once per backend:
`[sqlite]` (SQLite + files on disk) and `[postgres]` (a real PostgreSQL + a real
S3-compatible server, both started here once per session; each test gets a fresh
database and a fresh bucket prefix). IMAGEGATE_TEST_BACKENDS=sqlite runs only the first.
"""

from __future__ import annotations

import base64
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from imagegate.app import create_app
from imagegate.config import Settings
from imagegate.core import Imagegate
from tests.backends import PgCluster, S3Server
from tests.fake_openai import FakeOpenAI

REPO = Path(__file__).resolve().parent.parent
IMAGEGATE_BIN = Path(sys.executable).parent / "imagegate"


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"api:{key}".encode()).decode()}


@dataclass
class Users:
    """alice (entities alice, acme), bob (entities bob, acme), carol (carol only)."""

    alice: str
    bob: str
    carol: str


BACKENDS = os.environ.get("IMAGEGATE_TEST_BACKENDS", "sqlite,postgres").split(",")


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    if "postgres" not in BACKENDS:
        pytest.skip("PostgreSQL not selected (IMAGEGATE_TEST_BACKENDS)")
    cluster = PgCluster.create()
    yield cluster
    cluster.destroy()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    if "postgres" not in BACKENDS:
        pytest.skip("S3 runs with the postgres backend (IMAGEGATE_TEST_BACKENDS)")
    server = S3Server.start(tmp_path_factory.mktemp("s3") / "moto.log")
    # In-process apps read the endpoint and credentials from the environment, as a
    # deployment would; `imagegate` processes started by tests inherit them.
    saved = {name: os.environ.get(name) for name in server.env()}
    os.environ.update(server.env())
    yield server
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    server.stop()


@dataclass
class Backend:
    name: str
    database_url: str | None = None
    files_url: str | None = None
    pg: PgCluster | None = None
    database: str | None = None

    @property
    def env(self) -> dict[str, str]:
        """The environment that points an `imagegate` process at this backend."""
        if self.name == "sqlite":
            return {}
        return {
            "IMAGEGATE_DATABASE_URL": str(self.database_url),
            "IMAGEGATE_FILES_URL": str(self.files_url),
        }


def _backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "sqlite":
        yield Backend("sqlite")
        return
    pg: PgCluster = request.getfixturevalue("pg_cluster")
    s3: S3Server = request.getfixturevalue("s3_server")
    database = pg.create_database()
    yield Backend("postgres", pg.url(database), s3.files_url(), pg, database)
    pg.drop_database(database)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    yield from _backend(request)


@pytest.fixture(scope="module", params=BACKENDS)
def module_backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """One backend per module, for fixtures that outlive a test (a live server)."""
    yield from _backend(request)


@pytest.fixture
def settings(tmp_path: Path, backend: Backend) -> Settings:
    return Settings(
        data_dir=tmp_path / "data", database_url=backend.database_url, files_url=backend.files_url
    )


@pytest.fixture
def raw_database(backend: Backend, settings: Settings) -> Callable[[], bytes]:
    """The database's bytes as a backup would hold them (the SQLite files, a pg_dump)."""

    def read() -> bytes:
        if backend.pg is not None and backend.database is not None:
            return backend.pg.dump(backend.database)
        db = settings.data_dir / "imagegate.db"
        return b"".join(p.read_bytes() for p in (db, db.with_name(db.name + "-wal")) if p.exists())

    return read


@pytest.fixture
def providers() -> dict[str, Any]:
    """Override in a test module to plug extra providers into the app."""
    return {}


@pytest.fixture
async def app(settings: Settings, providers: dict[str, Any]) -> AsyncIterator[FastAPI]:
    application = create_app(settings, providers=providers)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
def imagegate(app: FastAPI) -> Imagegate:
    ig: Imagegate = app.state.imagegate
    return ig


@pytest.fixture
async def users(imagegate: Imagegate) -> Users:
    accounts = imagegate.accounts
    alice = await accounts.create_key("alice")
    await accounts.create_key("alice", "acme")
    bob = await accounts.create_key("bob")
    await accounts.create_key("bob", "acme")
    carol = await accounts.create_key("carol")
    return Users(alice=alice, bob=bob, carol=carol)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LiveServer:
    url: str
    admin_key: str
    data_dir: Path
    process: subprocess.Popen[str]
    output: list[str]


def start_server(
    data_dir: Path | None, env: dict[str, str] | None = None, args: Sequence[str] = ()
) -> LiveServer:
    """`imagegate serve` in a real process; returns once /health answers. Without
    `data_dir`, no --data-dir flag: the environment (IMAGEGATE_DATA_DIR) decides."""
    port = free_port()
    where = ["--data-dir", str(data_dir)] if data_dir is not None else []
    proc = subprocess.Popen(
        [str(IMAGEGATE_BIN), "serve", "--port", str(port), *where, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
    )
    url = f"http://127.0.0.1:{port}"
    output: list[str] = []
    deadline = time.monotonic() + 60  # generous: replicas may start together on 2 cores
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    while time.monotonic() < deadline:
        output.extend(proc.stdout.readlines())
        if proc.poll() is not None:
            raise RuntimeError("server exited:\n" + "".join(output))
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    else:
        proc.kill()
        raise RuntimeError("server did not start:\n" + "".join(output))
    output.extend(proc.stdout.readlines())
    text = "".join(output)
    match = re.search(r"^\s+(ig_\S+)\s*$", text, re.MULTILINE)
    data_dir = data_dir or Path((env or {}).get("IMAGEGATE_DATA_DIR", "imagegate-data"))
    server = LiveServer(url, match[1] if match else "", data_dir, proc, output)
    _drain_output(server)
    return server


def stop_server(server: LiveServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.process.kill()


@pytest.fixture(scope="module")
def live_server(
    tmp_path_factory: pytest.TempPathFactory, module_backend: Backend
) -> Iterator[LiveServer]:
    server = start_server(tmp_path_factory.mktemp("live") / "data", module_backend.env)
    yield server
    stop_server(server)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    """A local server speaking OpenAI's Images protocol (see tests/fake_openai.py)."""
    server = FakeOpenAI()
    server.start()
    yield server
    server.stop()


def _drain_output(server: LiveServer) -> None:
    """Keep reading a live server's output into `server.output` in the background, so a
    long run (thousands of access-log lines) never blocks the server on a full pipe."""
    stdout = server.process.stdout
    assert stdout is not None
    os.set_blocking(stdout.fileno(), True)

    def read() -> None:
        for line in stdout:
            server.output.append(line)

    threading.Thread(target=read, daemon=True).start()


@pytest.fixture
async def replicas(settings: Settings) -> AsyncIterator[list[httpx.AsyncClient]]:
    """Two apps on the same database and files, as two replicas would be."""
    async with AsyncExitStack() as stack:
        clients = []
        for _ in range(2):
            application = create_app(settings)
            await stack.enter_async_context(application.router.lifespan_context(application))
            transport = httpx.ASGITransport(app=application)
            clients.append(
                await stack.enter_async_context(
                    httpx.AsyncClient(transport=transport, base_url="http://t", timeout=60)
                )
            )
        yield clients
