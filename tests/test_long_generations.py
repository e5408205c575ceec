"""Long generations (issue 16) against a real server process and a provider faked at the
network: timeouts that fit the work, no paid retry, connections kept alive, an SDK's own
retries joined to the attempt they repeat. Times are scaled down (a provider taking a few
seconds, clients giving up after one or two); bench/long_generation.py runs them at scale.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import (
    IMAGEGATE_BIN,
    Backend,
    LiveServer,
    free_port,
    start_server,
    stop_server,
)
from tests.fake_openai import FakeOpenAI, Reply, error_body

KEY = "sk-long-0123456789abcdef"
PROJECT = "admin/long"
KEEPALIVE = 0.3  # the server's keep-alive interval in these tests


class DroppingProvider:
    """A provider that reads each request whole, starts its answer and hangs up: a
    connection dropped mid-answer. Counts the requests it received."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.requests = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                head, _, body = data.partition(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                while len(body) < length:
                    body += conn.recv(65536)
                self.requests += 1
                conn.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n{"data": [')

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def dropping() -> Iterator[DroppingProvider]:
    provider = DroppingProvider()
    yield provider
    provider.close()


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory,
    module_backend: Backend,
    fake: FakeOpenAI,
    dropping: DroppingProvider,
) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("long")
    models = tmp / "models.toml"
    models.write_text(f"""
[models."test/slow"]
provider = "openai"
upstream_model = "slow"
base_url = "{fake.url}/v1"
params = ["size", "quality", "stream"]
size_range = [64, 2048]
timeout_s = 60
retry_base_s = 0.01

[models."test/hung"]
alias_of = "test/slow"
timeout_s = 1.0

[models."test/hung-retried"]
alias_of = "test/hung"
retry_timeouts = true

[models."test/dropping"]
alias_of = "test/slow"
base_url = "http://127.0.0.1:{dropping.port}/v1"

[models."test/unreachable"]
alias_of = "test/slow"
base_url = "http://127.0.0.1:{free_port()}/v1"
""")
    env = {
        **module_backend.env,
        "OPENAI_API_KEY": KEY,
        "IMAGEGATE_KEEPALIVE_INTERVAL": str(KEEPALIVE),
        "IMAGEGATE_IDEMPOTENCY_WAIT": "1",
    }
    live = start_server(tmp / "data", env, ["--models", str(models)])
    yield live
    stop_server(live)


@pytest.fixture
def upstream(fake: FakeOpenAI) -> FakeOpenAI:
    fake.reset()
    return fake


def body(prompt: str, model: str = "test/slow", **inputs: Any) -> dict[str, Any]:
    return {"project_id": PROJECT, "inputs": {"model": model, "prompt": prompt, **inputs}}


def client(server: LiveServer, read_timeout: float = 60.0) -> httpx.AsyncClient:
    timeout = httpx.Timeout(10.0, read=read_timeout)
    return httpx.AsyncClient(base_url=server.url, auth=("api", server.admin_key), timeout=timeout)


async def calls_with_prompt(server: LiveServer, prompt: str) -> list[dict[str, Any]]:
    async with client(server) as c:
        res = await c.post(
            "/calls/stream_query",
            json={"project_id": PROJECT, "limit": 1000},
        )
    calls = [json.loads(line) for line in res.text.splitlines() if line.strip()]
    return [call for call in calls if call["inputs"].get("prompt") == prompt]


# --- The Weave client, unchanged, with a timeout shorter than the generation -------------


def test_weave_client_outlasting_its_timeout_gets_images_paid_once(
    server: LiveServer, upstream: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    remote = pytest.importorskip("weave.trace_server_bindings.remote_http_trace_server")
    monkeypatch.setenv("WEAVE_HTTP_TIMEOUT", "2")
    upstream.push(Reply(delay_s=5))  # longer than the client's 2 s, with its 2 retries
    weave = remote.RemoteHTTPTraceServer(server.url, password=server.admin_key)
    started = time.monotonic()
    created = weave.image_create(body("a slow lighthouse"))
    assert time.monotonic() - started >= 5
    assert len(created.response["data"]) == 1
    # The client never timed out (the answer trickled), so it never asked again.
    assert len(upstream.requests) == 1
    assert upstream.requests[0].headers.get("x-stainless-retry-count") == "0"
    read = weave.call_read({"project_id": PROJECT, "id": created.weave_call_id}).call
    assert read.summary["timeout_s"] == 60
    assert len(read.summary["attempts"]) == 1


async def test_sdk_retry_joins_the_attempt_it_repeats(
    server: LiveServer, upstream: FakeOpenAI
) -> None:
    """A client that does give up (keep-alive off) and retries as Stainless SDKs do: the
    same body with x-stainless-retry-count 1, 2. Each retry gets the first attempt's
    generation; a new first attempt (count 0) is a new generation."""
    upstream.push(Reply(delay_s=3), Reply())
    request = body("a patient heron")
    off = {"Imagegate-Keep-Alive": "off", "x-stainless-read-timeout": "1"}
    async with client(server, read_timeout=1.0) as impatient:
        with pytest.raises(httpx.ReadTimeout):
            await impatient.post(
                "/image/create", json=request, headers={**off, "x-stainless-retry-count": "0"}
            )
    async with client(server) as c:
        retried = await c.post(
            "/image/create", json=request, headers={**off, "x-stainless-retry-count": "1"}
        )
        assert retried.status_code == 200, retried.text
        first_id = retried.json()["weave_call_id"]
        assert len(retried.json()["response"]["data"]) == 1
        assert len(upstream.requests) == 1
        again = await c.post(
            "/image/create", json=request, headers={**off, "x-stainless-retry-count": "2"}
        )
        assert again.json()["weave_call_id"] == first_id
        assert len(upstream.requests) == 1
        # A new first attempt with the same body is new work (asking twice is legitimate).
        fresh = await c.post(
            "/image/create", json=request, headers={**off, "x-stainless-retry-count": "0"}
        )
        assert fresh.json()["weave_call_id"] != first_id
        assert len(upstream.requests) == 2
    assert {c["id"] for c in await calls_with_prompt(server, "a patient heron")} == {
        first_id,
        fresh.json()["weave_call_id"],
    }


async def test_openai_sdk_retry_is_joined_too(server: LiveServer, upstream: FakeOpenAI) -> None:
    upstream.push(Reply(delay_s=3))
    request = {"model": "test/slow", "prompt": "a quiet harbour"}
    headers = {"OpenAI-Project": PROJECT, "x-stainless-retry-count": "0"}
    async with client(server, read_timeout=1.0) as impatient:
        with pytest.raises(httpx.ReadTimeout):
            await impatient.post("/v1/images/generations", json=request, headers=headers)
    async with client(server) as c:
        retried = await c.post(
            "/v1/images/generations",
            json=request,
            headers={**headers, "x-stainless-retry-count": "1"},
        )
    assert retried.status_code == 200, retried.text
    assert len(retried.json()["data"]) == 1
    assert len(upstream.requests) == 1


def test_generate_command_waits_and_shows_the_generation_running(
    server: LiveServer, upstream: FakeOpenAI, tmp_path: Path
) -> None:
    upstream.push(Reply(delay_s=6.5))
    res = subprocess.run(
        [str(IMAGEGATE_BIN), "generate", "a slow tide", "-m", "test/slow", "--project", PROJECT,
         "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "IMAGEGATE_URL": server.url, "IMAGEGATE_API_KEY": server.admin_key},
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "Generating 1 image(s): running for 5 s" in res.stderr
    [saved] = res.stdout.splitlines()
    assert Path(saved).read_bytes().startswith(b"\x89PNG")
    assert len(upstream.requests) == 1


# --- Keeping the connection busy ---------------------------------------------------------


async def test_early_answer_trickles_whitespace_before_the_json(
    server: LiveServer, upstream: FakeOpenAI
) -> None:
    upstream.push(Reply(delay_s=3), Reply(delay_s=3))
    asked = {"Imagegate-Keep-Alive": "whitespace"}
    async with client(server, read_timeout=1.0) as c:
        weave = await c.post("/image/create", json=body("a long dune"), headers=asked)
        openai = await c.post(
            "/v1/images/generations",
            json={"model": "test/slow", "prompt": "a long road"},
            headers={**asked, "OpenAI-Project": PROJECT},
        )
    for res in (weave, openai):
        assert res.status_code == 200
        assert res.content.startswith(b" ") and res.content.lstrip().startswith(b"{")
    assert len(weave.json()["response"]["data"]) == 1
    assert len(openai.json()["data"]) == 1
    assert len(upstream.requests) == 2


async def test_quick_answers_and_errors_keep_their_status(
    server: LiveServer, upstream: FakeOpenAI
) -> None:
    asked = {"Imagegate-Keep-Alive": "whitespace", "OpenAI-Project": PROJECT}
    upstream.push(Reply(400, json=error_body("bad prompt", "invalid_prompt")))
    async with client(server) as c:
        quick = await c.post(
            "/v1/images/generations", json={"model": "test/slow", "prompt": "x"}, headers=asked
        )
        invalid = await c.post(
            "/image/create",
            json=body("x", size="7x7"),
            headers={"Imagegate-Keep-Alive": "whitespace"},
        )
    assert quick.status_code == 400 and quick.json()["error"]["message"] == "bad prompt"
    assert invalid.status_code == 422
    assert not quick.content.startswith(b" ")


async def test_late_openai_failure_is_the_error_envelope_after_an_early_200(
    server: LiveServer, upstream: FakeOpenAI
) -> None:
    upstream.push(Reply(400, json=error_body("bad prompt", "invalid_prompt"), delay_s=2))
    async with client(server, read_timeout=1.0) as c:
        res = await c.post(
            "/v1/images/generations",
            json={"model": "test/slow", "prompt": "x"},
            headers={"Imagegate-Keep-Alive": "whitespace", "OpenAI-Project": PROJECT},
        )
    assert res.status_code == 200  # sent before the failure was known
    assert res.json()["error"]["message"] == "bad prompt"


async def test_late_weave_failure_is_a_response_error_after_an_early_200(
    server: LiveServer, upstream: FakeOpenAI
) -> None:
    """A repeat of a running request's Idempotency-Key waits (1 s here), then cannot be
    answered: by then its 200 has gone out, so the failure is in Weave's error shape."""
    upstream.push(Reply(delay_s=4))
    headers = {"Idempotency-Key": "slow-key", "Imagegate-Keep-Alive": "whitespace"}
    request = body("a slow key")
    async with client(server, read_timeout=2.0) as c:
        first = asyncio.create_task(c.post("/image/create", json=request, headers=headers))
        await asyncio.sleep(0.5)
        repeat = await c.post("/image/create", json=request, headers=headers)
        assert repeat.status_code == 200 and repeat.content.startswith(b" ")
        error = repeat.json()["response"]
        assert error["error_type"] == "server_error" and error["status_code"] == 409
        assert "still in progress" in error["error"]
        assert repeat.json()["weave_call_id"] is None
        done = await first
    assert len(done.json()["response"]["data"]) == 1
    assert len(upstream.requests) == 1


async def test_stream_sends_heartbeats_while_silent(
    server: LiveServer, upstream: FakeOpenAI
) -> None:
    upstream.push(Reply(delay_s=3))
    lines: list[str] = []
    async with (
        client(server, read_timeout=1.0) as c,
        c.stream(
            "POST",
            "/v1/images/generations",
            json={"model": "test/slow", "prompt": "a slow comet", "stream": True},
            headers={"OpenAI-Project": PROJECT},
        ) as res,
    ):
        assert res.status_code == 200
        async for line in res.aiter_lines():
            lines.append(line)
    assert lines.count(": keep-alive") >= 3
    assert "event: image_generation.completed" in lines
    assert len(upstream.requests) == 1


# --- Timeouts and what is retried ------------------------------------------------------


async def test_hung_provider_ends_as_timeout_after_one_request(
    server: LiveServer, upstream: FakeOpenAI
) -> None:
    upstream.push(*[Reply(delay_s=10)] * 3)
    async with client(server) as c:
        started = time.monotonic()
        res = await c.post("/image/create", json=body("a stuck gear", model="test/hung"))
        took = time.monotonic() - started
    response = res.json()["response"]
    assert response["error_type"] == "timeout" and response["may_be_billed"] is True
    assert "may have done (and billed)" in response["error"]
    assert took < 5
    assert len(upstream.requests) == 1
    [call] = await calls_with_prompt(server, "a stuck gear")
    assert call["summary"]["timeout_s"] == 1.0
    assert [a["error_type"] for a in call["summary"]["attempts"]] == ["timeout"]


async def test_retry_timeouts_turns_retries_back_on(
    server: LiveServer, upstream: FakeOpenAI
) -> None:
    upstream.push(*[Reply(delay_s=10)] * 3)
    async with client(server) as c:
        res = await c.post("/image/create", json=body("a stuck wheel", model="test/hung-retried"))
    assert res.json()["response"]["error_type"] == "timeout"
    assert len(upstream.requests) == 3


async def test_connection_dropped_mid_answer_is_not_retried(
    server: LiveServer, dropping: DroppingProvider
) -> None:
    before = dropping.requests
    async with client(server) as c:
        res = await c.post("/image/create", json=body("a cut wire", model="test/dropping"))
    response = res.json()["response"]
    assert response["error_type"] == "timeout" and response["may_be_billed"] is True
    assert "broke off" in response["error"]
    assert dropping.requests - before == 1


async def test_connect_errors_are_retried(server: LiveServer) -> None:
    async with client(server) as c:
        res = await c.post("/image/create", json=body("a closed door", model="test/unreachable"))
    response = res.json()["response"]
    assert response["error_type"] == "provider_error"
    assert response["error"].startswith("could not connect to the provider")
    [call] = await calls_with_prompt(server, "a closed door")
    assert len(call["summary"]["attempts"]) == 3
