"""Faults under load: the server killed mid-run, a provider failing a fifth of its
requests, a full disk. Real processes, real files; every wait is bounded and no
assertion depends on timing.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import io
import json
import os
import random
import subprocess
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from imagegate.app import create_app
from imagegate.config import Settings
from imagegate.digest import weave_digest
from imagegate.recovery import INTERRUPTED
from imagegate.store import LocalFileStore
from imagegate.store.staging import StagedFile
from tests.backends import stored_files
from tests.conftest import Backend, LiveServer, start_server, stop_server
from tests.fake_openai import FakeOpenAI, Reply, error_body, small_png

KEY = "sk-faults-0123456789abcdef"
PROJECT = "admin/faults"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI()
    server.start()
    yield server
    server.stop()


def catalog(fake: FakeOpenAI) -> str:
    return f"""
[models."test/fake"]
provider = "openai"
upstream_model = "fake"
base_url = "{fake.url}/v1"
params = ["size"]
size_range = [64, 2048]
max_attempts = 1

# The catalog's generous timeout: on a loaded machine a slow success stays a success.
[models."test/flaky"]
alias_of = "test/fake"
max_attempts = 3
retry_base_s = 0.01

# The only short timeout: the fake never answers this model.
[models."test/hung"]
alias_of = "test/flaky"
upstream_model = "hung"
timeout_s = 1.0
"""


def serve(tmp_path: Path, backend: Backend, fake: FakeOpenAI, **env: str) -> LiveServer:
    models = tmp_path / "models.toml"
    models.write_text(catalog(fake))
    server = start_server(
        tmp_path / "data",
        {**backend.env, "OPENAI_API_KEY": KEY, **env},
        ["--models", str(models)],
    )
    return server


def noise_png(seed: int, side: int = 256) -> bytes:
    """An incompressible PNG (~200 KB), so writes take long enough to be cut short."""
    buf = io.BytesIO()
    Image.frombytes("RGB", (side, side), random.Random(seed).randbytes(side * side * 3)).save(
        buf, format="PNG", compress_level=0
    )
    return buf.getvalue()


@dataclass
class Answer:
    prompt: str
    status: int | None  # None: no answer, the server died first
    body: dict[str, Any] | None = None


async def generate(client: httpx.AsyncClient, model: str, prompt: str) -> Answer:
    try:
        res = await client.post(
            "/image/create",
            json={"project_id": PROJECT, "inputs": {"model": model, "prompt": prompt}},
        )
    except httpx.TransportError:
        return Answer(prompt, None)
    return Answer(prompt, res.status_code, res.json() if res.status_code == 200 else None)


async def until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        await asyncio.sleep(0.05)


async def all_calls(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    res = await client.post("/calls/stream_query", json={"project_id": PROJECT})
    assert res.status_code == 200
    return [json.loads(line) for line in res.text.splitlines()]


async def file_bytes(client: httpx.AsyncClient, digest: str) -> bytes | None:
    res = await client.post("/file/content", json={"project_id": PROJECT, "digest": digest})
    return res.content if res.status_code == 200 else None


async def check_images_exist(client: httpx.AsyncClient, calls: list[dict[str, Any]]) -> None:
    """No call claims an image that is not stored whole."""
    for call in calls:
        for item in (call["output"] or {}).get("data", []):
            files = item["b64_json"]["files"]
            for digest in (files["content"], files["metadata.json"]):
                data = await file_bytes(client, digest)
                assert data is not None and weave_digest(data) == digest, call["id"]


async def check_store_complete(settings: Settings) -> dict[str, bytes]:
    """Every stored file is complete (its name is its content's digest), no temp file left."""
    files = await stored_files(settings)
    for key, data in files.items():
        name = key.rsplit("/", 1)[-1]
        assert not name.startswith(".tmp-"), key
        assert name == weave_digest(data), f"{key} is not complete"
    return files


def backend_settings(tmp_path: Path, backend: Backend) -> Settings:
    return Settings(
        data_dir=tmp_path / "data", database_url=backend.database_url, files_url=backend.files_url
    )


async def test_kill_9_mid_run_keeps_every_answered_generation(
    tmp_path: Path, backend: Backend, fake: FakeOpenAI
) -> None:
    fake.reset()
    # "slow" prompts hang at the provider until after the kill; the others answer at once
    # with a distinct ~200 KB image each, so the kill lands amid writes and commits.
    fake.responder = lambda body: (
        Reply(delay_s=30)
        if body["prompt"].startswith("slow")
        else Reply(image=noise_png(hash(body["prompt"])))
    )
    server = serve(tmp_path, backend, fake)
    key = server.admin_key
    answers: list[Answer] = []
    stop = asyncio.Event()

    async def keep_generating(client: httpx.AsyncClient, worker: int) -> None:
        for i in range(10_000):
            if stop.is_set():
                return
            answer = await generate(client, "test/fake", f"fast {worker}-{i}")
            answers.append(answer)
            if answer.status is None:
                return

    try:
        async with httpx.AsyncClient(base_url=server.url, auth=("api", key), timeout=60) as c:
            slow = [asyncio.create_task(generate(c, "test/fake", f"slow {i}")) for i in range(8)]
            workers = [asyncio.create_task(keep_generating(c, w)) for w in range(6)]
            # Every slow call is recorded as started once the provider has its request.
            slow_seen = lambda: sum(r.body["prompt"].startswith("slow") for r in fake.requests)  # noqa: E731
            await until(lambda: slow_seen() == 8 and len(answers) >= 30, "calls in flight")
            in_flight = (slow_seen(), len(answers))
            server.process.kill()  # SIGKILL: no shutdown, no cleanup
            killed_at = time.monotonic()  # every unfinished call started before this
            server.process.wait(timeout=30)
            stop.set()
            answers += await asyncio.gather(*slow)
            await asyncio.gather(*workers)
    finally:
        server.process.kill()  # also when the run above failed: never leave it behind
    settings = backend_settings(tmp_path, backend)
    store = open_store_root(settings)
    if store is not None:  # what a write cut short by the kill leaves on disk
        planted = store / "admin" / "faults" / "ab" / ".tmp-cut-short"
        planted.parent.mkdir(parents=True, exist_ok=True)
        planted.write_bytes(b"\x89PNG half")
    env = {}
    if backend.pg is not None:
        # Replicas share PostgreSQL: only calls older than the threshold are orphans.
        env["IMAGEGATE_STALE_CALL_AFTER"] = "1"
        await until(lambda: time.monotonic() > killed_at + 1.5, "the calls to be stale")
    server = serve(tmp_path, backend, fake, **env)
    try:
        async with httpx.AsyncClient(base_url=server.url, auth=("api", key), timeout=60) as client:
            answered = [a for a in answers if a.status == 200]
            assert len(answered) >= 30 and all(a.body for a in answered)
            calls = {c["id"]: c for c in await all_calls(client)}
            for answer in answered:
                assert answer.body is not None
                call = calls[answer.body["weave_call_id"]]
                assert call["summary"]["weave"]["status"] == "success", answer
                returned = [d["b64_json"] for d in answer.body["response"]["data"]]
                claimed = [d["b64_json"] for d in call["output"]["data"]]
                assert len(claimed) == len(returned) == 1 and claimed == returned
                for ref in claimed:
                    data = await file_bytes(client, ref["files"]["content"])
                    assert data is not None and weave_digest(data) == ref["files"]["content"]
            statuses = {c["summary"]["weave"]["status"] for c in calls.values()}
            assert "running" not in statuses
            interrupted = [c for c in calls.values() if c["exception"] == INTERRUPTED]
            assert {c["inputs"]["prompt"] for c in interrupted} >= {f"slow {i}" for i in range(8)}
            assert all(c["output"] is None and c["ended_at"] for c in interrupted)
            await check_images_exist(client, list(calls.values()))
            metrics = (await client.get("/metrics")).text
            assert f"imagegate_interrupted_calls_total {float(len(interrupted))}" in metrics
            print(
                f"RACE test_kill_9_mid_run[{backend.name}]: killed with {in_flight[0]} slow "
                f"generations held at the provider and {in_flight[1]} answered; "
                f"{len(answered)} answered in all, each intact after restart; "
                f"{len(interrupted)} calls ended as interrupted"
            )
        await check_store_complete(settings)
    finally:
        stop_server(server)


def open_store_root(settings: Settings) -> Path | None:
    """The local file store's root, or None for object storage."""
    return settings.files_dir if settings.files_url is None else None


# One fifth of the provider's answers fail, in every way it can: a deck of 50 answers,
# shuffled and dealt in turn, so each kind is served within the first 50 requests.
# (Requests that hang go to their own model, test/hung: only that one has a short timeout.)
FAILURES: dict[str, tuple[int, str | None]] = {
    # kind: (cards in the deck, error_type it ends in when it is the last attempt)
    "ok": (41, None),
    "http_500": (2, "provider_error"),
    "http_503": (1, "provider_error"),
    "http_429": (2, "rate_limit"),
    "not_json": (1, "provider_error"),
    "no_images": (1, "provider_error"),
    "bad_base64": (1, "provider_error"),
    "not_an_image": (1, "provider_error"),
}
# A timeout is not retried: the provider may have billed the request it did not answer.
RETRIED = {"http_500", "http_503", "http_429"}


def failure_reply(kind: str, index: int) -> Reply:
    b64 = lambda data: base64.b64encode(data).decode()  # noqa: E731
    return {
        "ok": Reply(image=small_png(index)),
        "http_500": Reply(500, json=error_body("internal error", "server_error")),
        "http_503": Reply(503, json=error_body("overloaded"), headers={"Retry-After": "0"}),
        "http_429": Reply(429, json=error_body("slow down"), headers={"Retry-After": "0"}),
        "not_json": Reply(body=b'{"data": [{"b64_json": '),
        "no_images": Reply(json={"created": 1}),
        "bad_base64": Reply(json={"created": 1, "data": [{"b64_json": "@@not base64@@"}]}),
        "not_an_image": Reply(json={"created": 1, "data": [{"b64_json": b64(b"<html>")}]}),
    }[kind]


async def test_provider_failing_a_fifth_of_requests_under_load(
    tmp_path: Path, backend: Backend, fake: FakeOpenAI
) -> None:
    fake.reset()
    deck = [kind for kind, (cards, _) in FAILURES.items() for _ in range(cards)]
    random.Random(20).shuffle(deck)
    served: dict[str, list[str]] = defaultdict(list)  # prompt -> kinds, in order
    dealt = 0

    def respond(body: dict[str, Any]) -> Reply:
        nonlocal dealt
        if body["model"] == "hung":
            served[body["prompt"]].append("hang")
            return Reply(hang=True)
        kind = deck[dealt % len(deck)]
        dealt += 1
        served[body["prompt"]].append(kind)
        return failure_reply(kind, dealt)

    fake.responder = respond
    # 84 generations at once share PostgreSQL's pool of 30 connections; on a loaded
    # machine a request can wait for one longer than the 5 s default before it answers
    # 503. Waiting for a connection is not what this test is about: give it a minute.
    server = serve(tmp_path, backend, fake, IMAGEGATE_DATABASE_TIMEOUT="60")
    try:
        async with httpx.AsyncClient(
            # A bound, not a timing: 84 generations at once on a loaded 2-core machine can
            # take minutes, and a client that gave up would be a false failure.
            base_url=server.url,
            auth=("api", server.admin_key),
            timeout=600,
        ) as client:
            prompts = [f"prompt {i}" for i in range(80)]
            hung = [f"hung {i}" for i in range(4)]
            answers, hung_answers = await asyncio.gather(
                asyncio.gather(*(generate(client, "test/flaky", p) for p in prompts)),
                asyncio.gather(*(generate(client, "test/hung", p) for p in hung)),
            )
            assert server.process.poll() is None
            assert (await client.get("/health")).status_code == 200
            calls = {c["id"]: c for c in await all_calls(client)}
            await check_images_exist(client, list(calls.values()))
        unanswered = [a for a in [*answers, *hung_answers] if a.status != 200]
        assert not unanswered, unanswered
        assert {kind for seq in served.values() for kind in seq} == {*FAILURES, "hang"}, served
        assert len(calls) == len(answers) + len(hung_answers) == 84
        for answer in hung_answers:
            assert answer.status == 200 and answer.body is not None, answer
            call = calls[answer.body["weave_call_id"]]
            attempts = call["summary"]["attempts"]
            # One attempt, timed out and not retried: the provider may have billed it.
            seen = served[answer.prompt]
            assert seen == ["hang"], (seen, attempts)
            assert [a["error_type"] for a in attempts] == ["timeout"], attempts
            assert answer.body["response"]["error_type"] == "timeout", answer
            assert call["exception"].startswith("timeout: ")
        for answer in answers:
            assert answer.status == 200 and answer.body is not None, answer
            response, call_id = answer.body["response"], answer.body["weave_call_id"]
            call = calls[call_id]
            seq = served[answer.prompt]
            attempts = call["summary"]["attempts"]
            # Each attempt the provider saw is in the call, and retries stop where they must.
            assert len(attempts) == len(seq), (seq, attempts)
            assert all(kind in RETRIED for kind in seq[:-1]) and len(seq) <= 3, (seq, attempts)
            expected = FAILURES[seq[-1]][1]
            if expected is None:
                assert len(response["data"]) == 1 and call["exception"] is None, (seq, attempts)
                assert call["summary"]["weave"]["status"] == "success"
            else:
                assert len(seq) == 3 or seq[-1] not in RETRIED, (seq, attempts)
                assert response["error_type"] == expected and response["error"], (answer, attempts)
                assert "data" not in response and call["output"] is None
                assert call["exception"].startswith(f"{expected}: ")
                assert call["summary"]["weave"]["status"] == "error"
    finally:
        stop_server(server)


@pytest.fixture(params=["tmpfs", "injected"])
def small_disk(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[Path, LocalFileStore | None]]:
    """`tmpfs`: a real 512 KiB tmpfs for the file store (skipped where it cannot be
    mounted, e.g. not as root: it never falls back to the injected store silently).
    `injected`: a store that fails with ENOSPC past 512 KiB."""
    root = tmp_path / "small-disk"
    root.mkdir()
    if request.param == "injected":
        yield root, FullDisk(root, 512 * 1024)
        return
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(root)],
        capture_output=True,
        text=True,
    )
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mount.stderr.strip()}")
    try:
        yield root, None
    finally:
        subprocess.run(["umount", "-l", str(root)], check=False)


class FullDisk(LocalFileStore):
    """A local store on a disk of `capacity` bytes: past it, writes fail as a full disk's do."""

    def __init__(self, root: Path, capacity: int) -> None:
        super().__init__(root)
        self.free = capacity

    def _write(self, path: Path, data: bytes) -> None:  # type: ignore[override]
        # Where the disk write happens: put() maps what it raises, as for a real disk.
        if len(data) > self.free:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.free -= len(data)
        LocalFileStore._write(path, data)

    def _commit(self, staged: StagedFile, path: Path) -> None:  # type: ignore[override]
        # An image a provider wrote into a staged file: its bytes are already on the
        # disk, so a full disk refuses them while they are written; here, at commit.
        if staged.size > self.free:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.free -= staged.size
        LocalFileStore._commit(staged, path)


async def test_disk_full_is_a_clear_error_with_nothing_partial(
    tmp_path: Path, small_disk: tuple[Path, LocalFileStore | None]
) -> None:
    root, injected = small_disk
    settings = Settings(data_dir=tmp_path / "data", files_url=f"file://{root}")
    app = create_app(settings, file_store=injected)
    async with app.router.lifespan_context(app):
        key = await app.state.imagegate.accounts.create_key("admin", "admin")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://t", auth=("api", key)
        ) as client:

            async def create(**inputs: Any) -> dict[str, Any]:
                inputs = {"model": "local/procedural", "prompt": "a teal owl", **inputs}
                res = await client.post(
                    "/image/create", json={"project_id": PROJECT, "inputs": inputs}
                )
                assert res.status_code == 200
                return res.json()

            fits = await create(size="256x256")
            assert "data" in fits["response"]
            # Ten 1024x1024 images (well over 1 MiB) into what is left of 512 KiB.
            full = await create(size="1024x1024", n=10, prompt="red green blue orange")
            assert full["response"]["error_type"] == "storage_error"
            assert "could not be stored" in full["response"]["error"]
            assert "data" not in full["response"]
            calls = {c["id"]: c for c in await all_calls(client)}
            failed = calls[full["weave_call_id"]]
            assert failed["output"] is None and failed["exception"].startswith("storage_error")
            assert calls[fits["weave_call_id"]]["summary"]["weave"]["status"] == "success"
            await check_images_exist(client, list(calls.values()))
    files = await check_store_complete(settings)
    assert not [p for p in root.rglob(".tmp-*")]
    assert files  # the first generation's image and metadata
