"""Shared fixtures: an app on a temp data dir, an HTTP client for it, users and keys,
and a real `imagegate serve` process for tests that need one."""

from __future__ import annotations

import base64
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from imagegate.app import create_app
from imagegate.config import Settings
from imagegate.core import Imagegate

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


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data")


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


def start_server(data_dir: Path, env: dict[str, str] | None = None) -> LiveServer:
    """`imagegate serve` in a real process; returns once /health answers."""
    port = free_port()
    proc = subprocess.Popen(
        [str(IMAGEGATE_BIN), "serve", "--port", str(port), "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
    )
    url = f"http://127.0.0.1:{port}"
    output: list[str] = []
    deadline = time.monotonic() + 30
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
    return LiveServer(url, match[1] if match else "", data_dir, proc, output)


def stop_server(server: LiveServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.process.kill()


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = start_server(tmp_path_factory.mktemp("live") / "data")
    yield server
    stop_server(server)
