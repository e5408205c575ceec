"""Memory per generation in flight does not grow with image size (issue 12): with several
large images in flight at once and their answers not read yet, a real `imagegate serve`
process (one worker) grows by far less than one copy of each image. Every path an image
takes out of the server is covered: an untracked `/image/create` answer, the OpenAI
door's stream (partial images and the final one), and a replay of that stream by its
idempotency key. The provider is the fake OpenAI server, at the network boundary.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import LiveServer, start_server, stop_server
from tests.fake_openai import FakeOpenAI, Reply
from tests.test_streamed_decode import grainy_png

KEY = "sk-env-0123456789abcdef"
IN_FLIGHT = 6
PROJECT = "admin/memory"


@pytest.fixture(scope="module")
def image() -> bytes:
    png = grainy_png(2048, 2048)  # 12 MB: what one image costs dwarfs the noise
    assert len(png) > 12_000_000
    return png


@pytest.fixture
def server(tmp_path_factory: pytest.TempPathFactory, fake: FakeOpenAI) -> Iterator[LiveServer]:
    """A server of its own for each test: memory an earlier test freed (and the
    allocator kept) would otherwise hide what the next one allocates."""
    work = tmp_path_factory.mktemp("memory")
    models = work / "models.toml"
    models.write_text(f'[models."gpt-image-1.5"]\nbase_url = "{fake.url}/v1"\n')
    env = {"OPENAI_API_KEY": KEY, "IMAGEGATE_MODELS": str(models), "IMAGEGATE_WORKERS": "1"}
    live = start_server(work / "data", env)
    yield live
    stop_server(live)


def _tree(pid: int) -> list[int]:
    """`pid` and its descendants (a supervisor and its workers, if any)."""
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = (task / "children").read_text().split()
        pids += [p for child in children for p in _tree(int(child))]
    return pids


def _status_kib(pid: int, field: str) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB", status, re.MULTILINE)
    assert match, status
    return int(match[1])


class Peak:
    """The server's peak resident memory from now on, above what it is now."""

    def __init__(self, server: LiveServer) -> None:
        self.pids = _tree(server.process.pid)
        for pid in self.pids:  # 5: the peak (VmHWM) starts again from the current RSS
            Path(f"/proc/{pid}/clear_refs").write_text("5")
        self.start = sum(_status_kib(pid, "VmRSS") for pid in self.pids)

    def growth_mib(self) -> float:
        return (sum(_status_kib(pid, "VmHWM") for pid in self.pids) - self.start) / 1024


@contextlib.asynccontextmanager
async def held(
    client: httpx.AsyncClient, requests: list[dict[str, Any]], settle_s: float
) -> AsyncIterator[list[httpx.Response]]:
    """Send the requests at once, wait for each answer's headers, then leave the bodies
    unread for `settle_s` (the server makes all it would of them meanwhile)."""
    async with contextlib.AsyncExitStack() as stack:
        responses = await asyncio.gather(
            *(stack.enter_async_context(client.stream("POST", **r)) for r in requests)
        )
        await asyncio.sleep(settle_s)
        yield list(responses)


def _bound_mib(image: bytes) -> float:
    """Far less than one copy of each image in flight (each used to be held 3-4 times:
    its bytes, their base64, and the answer around it)."""
    return IN_FLIGHT * len(image) / 2**20 / 2


def _completed_b64(body: bytes) -> list[str]:
    """The images of an OpenAI stream: each partial's, then the final one's."""
    events = [json.loads(line[6:]) for line in body.split(b"\n") if line.startswith(b"data: ")]
    assert events and all(e["type"] != "error" for e in events), body[:500]
    return [e["b64_json"] for e in events]


async def test_untracked_answers_stream_from_the_provider_file(
    server: LiveServer, fake: FakeOpenAI, image: bytes
) -> None:
    """`track_llm_call: false`: nothing stored, the answer streams from the file the
    provider's answer was decoded into."""
    body = {
        "project_id": PROJECT,
        "inputs": {"model": "gpt-image-1.5", "prompt": "a grey owl"},
        "track_llm_call": False,
    }
    request = {"url": "/image/create", "json": body}
    async with httpx.AsyncClient(
        base_url=server.url, auth=("api", server.admin_key), timeout=120
    ) as client:
        fake.push(Reply(image=image))
        warm = await client.post(**request)  # everything loaded once
        assert warm.status_code == 200, warm.text[:300]
        fake.push(*(Reply(image=image) for _ in range(IN_FLIGHT)))
        peak = Peak(server)
        async with held(client, [request] * IN_FLIGHT, settle_s=1.5) as responses:
            growth = peak.growth_mib()
            for res in responses:
                assert res.status_code == 200
                answer = json.loads(await res.aread())
                (item,) = answer["response"]["data"]
                assert base64.b64decode(item["b64_json"]) == image
                assert answer["weave_call_id"] is None
    print(f"peak growth {growth:.1f} MiB, bound {_bound_mib(image):.1f} MiB")
    assert growth < _bound_mib(image), f"grew {growth:.0f} MiB"


def _stream_request(key: str | None = None) -> dict[str, Any]:
    headers = {"OpenAI-Project": PROJECT}
    if key is not None:
        headers["Idempotency-Key"] = key
    body = {"model": "gpt-image-1.5", "prompt": "a grey owl", "stream": True, "partial_images": 2}
    return {"url": "/v1/images/generations", "json": body, "headers": headers}


async def test_streamed_partials_and_images_pass_through_files(
    server: LiveServer, fake: FakeOpenAI, image: bytes
) -> None:
    """The OpenAI door's stream: the upstream's events are decoded into files as they
    arrive, and each partial and final image is streamed from the file store."""
    reply = Reply(image=image, partial_image=image)
    async with httpx.AsyncClient(
        base_url=server.url, headers={"Authorization": f"Bearer {server.admin_key}"}, timeout=120
    ) as client:
        fake.push(reply)
        warm = await client.post(**_stream_request())
        assert _completed_b64(warm.content)[-1] == base64.b64encode(image).decode()
        fake.push(*([reply] * IN_FLIGHT))
        peak = Peak(server)
        async with held(client, [_stream_request()] * IN_FLIGHT, settle_s=3) as responses:
            growth = peak.growth_mib()
            for res in responses:
                assert res.status_code == 200
                images = _completed_b64(await res.aread())
                assert len(images) == 3
                assert {base64.b64decode(b) for b in images} == {image}
    print(f"peak growth {growth:.1f} MiB, bound {_bound_mib(image):.1f} MiB")
    assert growth < _bound_mib(image), f"grew {growth:.0f} MiB"


async def test_a_replayed_stream_streams_from_the_file_store(
    server: LiveServer, fake: FakeOpenAI, image: bytes
) -> None:
    """A repeat of a streamed request by its idempotency key replays the stored images,
    read from the file store as they are sent."""
    async with httpx.AsyncClient(
        base_url=server.url, headers={"Authorization": f"Bearer {server.admin_key}"}, timeout=120
    ) as client:
        fake.push(Reply(image=image))
        first = await client.post(**_stream_request(key="replayed"))
        assert _completed_b64(first.content)[-1] == base64.b64encode(image).decode()
        asked = len(fake.requests)
        again = await client.post(**_stream_request(key="replayed"))  # warm
        assert _completed_b64(again.content) == _completed_b64(first.content)[-1:]
        peak = Peak(server)
        requests = [_stream_request(key="replayed")] * IN_FLIGHT
        async with held(client, requests, settle_s=1.5) as responses:
            growth = peak.growth_mib()
            for res in responses:
                assert res.status_code == 200
                (b64,) = _completed_b64(await res.aread())
                assert base64.b64decode(b64) == image
        assert len(fake.requests) == asked  # replayed, not generated again
    print(f"peak growth {growth:.1f} MiB, bound {_bound_mib(image):.1f} MiB")
    assert growth < _bound_mib(image), f"grew {growth:.0f} MiB"
