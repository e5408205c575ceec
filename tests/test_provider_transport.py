"""The OpenAI provider's HTTP transport (providers/transport.py: httpx2's interface over
aiohttp), against real servers on loopback: connections the provider closed while idle
are not reused, answers reach the SDK exactly as sent (compressed ones decoded once),
aiohttp's errors become the SDK's, and closing the provider closes its connections."""

from __future__ import annotations

import asyncio
import base64
import gc
import gzip
import json
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import openai
import pytest
import uvloop

from imagegate.errors import ProviderServerError, ProviderTimeout
from imagegate.providers import load_catalog
from imagegate.providers.attempts import classify_failure
from imagegate.providers.base import ImageRequest, MemoryFile, Secret
from imagegate.providers.catalog import ModelSpec
from imagegate.providers.openai import OpenAIProvider
from imagegate.providers.transport import http_client
from tests.fake_openai import FakeOpenAI, Reply, refused_url, small_png

KEY = Secret("sk-transport-0123456789")


@pytest.fixture(scope="module")
def brief() -> Iterator[FakeOpenAI]:
    """A provider that closes a connection idle for 0.2 s (uvicorn's keep-alive timeout)."""
    server = FakeOpenAI(keep_alive_s=0.2)
    server.start()
    yield server
    server.stop()


def model(tmp_path: Path, base_url: str, **settings: object) -> ModelSpec:
    models = tmp_path / "models.toml"
    extra = "".join(f"{name} = {json.dumps(value)}\n" for name, value in settings.items())
    models.write_text(
        f"""
[models."test/remote"]
provider = "openai"
upstream_model = "gpt-image-1.5"
base_url = "{base_url}/v1"
params = ["size"]
sizes = ["1024x1024"]
retry_base_s = 0.01
{extra}"""
    )
    spec = load_catalog(models).get("test/remote")
    assert spec is not None
    return spec


@pytest.fixture
async def provider() -> AsyncIterator[OpenAIProvider]:
    made = OpenAIProvider()
    yield made
    await made.aclose()


def request(spec: ModelSpec) -> ImageRequest:
    return ImageRequest(spec=spec, prompt="a red fox", n=1, size="1024x1024", api_key=KEY)


def image_bytes(file: object) -> bytes:
    assert isinstance(file, MemoryFile)
    return file.getvalue()


async def test_a_connection_the_provider_closed_while_idle_is_not_reused(
    tmp_path: Path, brief: FakeOpenAI, provider: OpenAIProvider
) -> None:
    brief.reset()
    spec = model(tmp_path, brief.url, max_attempts=1)  # a failure would not be retried
    for index in range(3):
        brief.push(Reply(image=small_png(index)))
        result = await provider.generate(request(spec))
        assert image_bytes(result.images[0].file) == small_png(index)
        assert [a["status_code"] for a in result.attempts] == [200]
        if index == 0:  # a second request at once: the kept-alive connection
            brief.push(Reply(image=small_png(9)))
            again = await provider.generate(request(spec))
            assert image_bytes(again.images[0].file) == small_png(9)
        await asyncio.sleep(0.6)  # the provider closes the idle connection
    ports = [received.port for received in brief.requests]
    assert len(ports) == 4
    assert ports[0] == ports[1]  # kept alive while the provider keeps it
    assert len({ports[1], ports[2], ports[3]}) == 3  # a new connection after each close


async def closing_provider(answer: bytes) -> asyncio.Server:
    """A provider (in this test's loop) that closes each connection right after its
    answer, without saying so (no `Connection: close`): the client's pool takes the
    connection back before it sees the close."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        await reader.readexactly(length)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(answer), answer)
        )
        await writer.drain()
        writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", 0)


def test_a_request_on_a_connection_closing_as_it_is_taken_is_retried(tmp_path: Path) -> None:
    """The SDK over our transport, called back to back on uvloop (as the server runs):
    the pool hands the connection out again before the loop has read the provider's
    close, and aiohttp finds it closing before it writes. Nothing reached the provider,
    so the provider's retry policy asks again (as one the provider may have read would
    not be)."""
    png = small_png(4)
    answer = json.dumps({"created": 1, "data": [{"b64_json": base64.b64encode(png).decode()}]})
    spec = model(tmp_path, "http://127.0.0.1:9")

    async def calls() -> tuple[int, list[BaseException]]:
        server = await closing_provider(answer.encode())
        port = server.sockets[0].getsockname()[1]
        client = openai.AsyncOpenAI(
            api_key="sk-0", base_url=f"http://127.0.0.1:{port}/v1", http_client=http_client()
        )
        generate = client.with_options(max_retries=0).images.generate
        answered, failed = 0, []
        try:
            for _ in range(6):
                try:
                    result = await generate(model="gpt-image-1.5", prompt="a red fox")
                except openai.APIConnectionError as exc:
                    failed.append(exc)
                else:
                    assert result.data and base64.b64decode(result.data[0].b64_json or "") == png
                    answered += 1
        finally:
            await client.close()
            server.close()
        return answered, failed

    answered, failed = uvloop.run(calls())
    assert answered == 3 and len(failed) == 3  # each fresh connection answers once
    for exc in failed:
        failure = classify_failure(exc, spec, 60, None)
        assert failure.retryable and not failure.may_be_billed
        assert failure.error.message.startswith("could not connect to the provider")


async def test_a_compressed_answer_is_decoded_once(
    tmp_path: Path, fake: FakeOpenAI, provider: OpenAIProvider
) -> None:
    fake.reset()
    png = small_png(3, size=200)
    answer = {"created": 1, "data": [{"b64_json": base64.b64encode(png).decode()}]}
    compressed = gzip.compress(json.dumps(answer).encode())
    fake.push(Reply(body=compressed, headers={"Content-Encoding": "gzip"}))
    result = await provider.generate(request(model(tmp_path, fake.url)))
    assert image_bytes(result.images[0].file) == png
    # The SDK asked for compressed answers itself (httpx2 decodes them, not aiohttp).
    assert "gzip" in fake.requests[0].headers["accept-encoding"]


async def test_a_refused_connection_is_retried_and_said_so(
    tmp_path: Path, provider: OpenAIProvider
) -> None:
    spec = model(tmp_path, refused_url(), max_attempts=2)
    with pytest.raises(ProviderServerError) as failed:
        await provider.generate(request(spec))
    assert failed.value.message.startswith("could not connect to the provider: ")
    assert "Connect call failed" in failed.value.message
    assert [a["error_type"] for a in failed.value.attempts] == ["provider_error"] * 2


async def test_a_provider_that_stops_answering_is_a_timeout(
    tmp_path: Path, fake: FakeOpenAI, provider: OpenAIProvider
) -> None:
    fake.reset()
    # The SDK's own read timeout (the request's), under imagegate's outer one.
    fake.push(Reply(delay_s=3))
    spec = model(tmp_path, fake.url, timeout_s=0.5)
    with pytest.raises(ProviderTimeout) as failed:
        await provider.generate(request(spec))
    assert "did not answer within 0.5s" in failed.value.message
    assert len(fake.requests) == 1  # sent: it may have been billed, not asked again


async def test_closing_the_provider_closes_its_connections(
    tmp_path: Path, fake: FakeOpenAI
) -> None:
    fake.reset()
    provider = OpenAIProvider()
    await provider.generate(request(model(tmp_path, fake.url)))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        await provider.aclose()
        del provider
        gc.collect()
    assert [str(w.message) for w in seen if "nclosed" in str(w.message)] == []
