"""Realistic image-generation calls, and a loader that sends them through the public
batch API (`POST /v2/{entity}/{project}/calls/complete`), as a Weave client would.

A project of N calls: 21 users, 6 models, spread over 90 days, 3% errors, prompts of
about 100 characters of which 0.1% contain MARKER (what the prompt-search reads look
for). Calls are generated from a seed, so two runs load the same project.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

from imagegate.service import OP_NAME

USERS = 21
MODELS = {  # model: (per-image price, size), as the catalog prices them
    "gpt-image-1": (0.042, "1024x1024"),
    "gpt-image-1-mini": (0.011, "1024x1024"),
    "gpt-image-1.5": (0.034, "1024x1024"),
    "dall-e-3": (0.04, "1024x1024"),
    "dall-e-2": (0.02, "512x512"),
    "local/procedural": (0.0, "512x512"),
}
DAYS = 90
ERROR_RATE = 0.03
MARKER = "heliotrope"  # in 0.1% of prompts, and in no word below
MARKER_RATE = 0.001
SUBJECTS = (
    "a teal owl", "an old lighthouse", "a red fox", "a paper boat", "a glass city",
    "a sleeping dragon", "a bicycle", "a koi pond", "a mountain village", "a robot gardener",
)  # fmt: skip
SCENES = (
    "at dusk in heavy rain", "under a violet aurora", "on a foggy harbour morning",
    "in a sunlit meadow", "inside a cluttered workshop", "on the surface of the moon",
)  # fmt: skip
STYLES = (
    "watercolour with soft edges", "35mm film photograph", "isometric pixel art",
    "ukiyo-e woodblock print", "studio product shot", "charcoal sketch on grey paper",
)  # fmt: skip
DETAILS = (
    "high detail", "shallow depth of field", "muted palette", "dramatic lighting",
    "wide angle", "symmetrical composition", "grainy texture", "pastel colours",
)  # fmt: skip


def _prompt(rng: random.Random, marked: bool) -> str:
    words = [rng.choice(SUBJECTS), rng.choice(SCENES), rng.choice(STYLES)]
    words += rng.sample(DETAILS, 3)
    if marked:
        words.insert(rng.randrange(1, len(words)), f"{MARKER} accents")
    return ", ".join(words)[:120]


def _uuid7(at: datetime, rng: random.Random) -> str:
    """A UUIDv7 of `at`, as Weave's clients send (ids are time-ordered; weave-wire.md)."""
    ms = int(at.timestamp() * 1000) & 0xFFFF_FFFF_FFFF
    value = ms << 80 | 0x7 << 76 | rng.getrandbits(12) << 64 | 0b10 << 62 | rng.getrandbits(62)
    return str(uuid.UUID(int=value))


def generate(
    count: int, *, seed: int = 15, now: datetime | None = None
) -> Iterator[dict[str, Any]]:
    """`count` finished calls in the wire shape of `calls/complete`, oldest first."""
    rng = random.Random(seed)
    end = now or datetime.now(UTC)
    first = end - timedelta(days=DAYS)
    step = timedelta(days=DAYS) / max(count, 1)
    for i in range(count):
        model = rng.choice(list(MODELS))
        price, size = MODELS[model]
        started = first + step * i + timedelta(milliseconds=rng.randrange(0, 900))
        latency = timedelta(milliseconds=rng.randrange(1500, 25_000))
        call_id = _uuid7(started, rng)
        inputs = {
            "model": model,
            "prompt": _prompt(rng, rng.random() < MARKER_RATE),
            "n": 1,
            "size": size,
            "quality": "medium",
            "output_format": "png",
        }
        usage = {"input_text_tokens": rng.randrange(20, 60), "output_image_tokens": 1056}
        failed = rng.random() < ERROR_RATE
        images = 0 if failed else 1
        cost = {"requests": 1, "images": images, "basis": "per_image", "input_cost": 0.0,
                "output_cost": price * images, "total_cost": price * images}  # fmt: skip
        summary: dict[str, Any] = {
            "usage": {model: {"requests": 1, "images": images, **usage}},
            "costs": {model: cost},
            "provider_latency_ms": int(latency.total_seconds() * 1000) - 40,
            "images": images,
            "attempts": [{"attempt": 1, "status": 500 if failed else 200}],
        }
        output = None
        exception = None
        if failed:
            exception = "provider_error: the provider answered 500: upstream overloaded"
            summary["error"] = {"type": "provider_error", "status_code": 500}
        else:
            digest = hashlib.sha256(call_id.encode()).hexdigest()
            output = {
                "created": int(started.timestamp()),
                "data": [{"content": {"digest": digest, "mimetype": "image/png",
                                      "width": 1024, "height": 1024, "size": 1_480_000}}],
                "size": size,
                "output_format": "png",
                "usage": usage,
            }  # fmt: skip
        yield {
            "project_id": "",  # set by the loader
            "id": call_id,
            "trace_id": call_id,
            "op_name": OP_NAME,
            "started_at": started.isoformat(),
            "ended_at": (started + latency).isoformat(),
            "attributes": {"imagegate": {"version": "0.1"}},
            "inputs": inputs,
            "output": output,
            "summary": summary,
            "exception": exception,
        }


def bodies(project_id: str, count: int, batch: int) -> list[bytes]:
    """The request bodies of `count` calls, `batch` a request, serialized."""
    calls = generate(count)
    out = []
    while chunk := [c for _, c in zip(range(batch), calls, strict=False)]:
        for c in chunk:
            c["project_id"] = project_id
        out.append(json.dumps({"batch": chunk}).encode())
    return out


async def load(
    url: str,
    project_id: str,
    keys: list[str],
    count: int,
    *,
    batch: int = 1000,
    concurrency: int = 4,
) -> tuple[float, float]:
    """Send `count` calls in batches, each batch as one of the `keys`' users; the rate
    in calls per second (whole batches, as acknowledged by the server) and the loader's
    own CPU per call while sending, in µs.

    The bodies are made and serialized before the clock starts: on a machine shared with
    the server, making them as it goes took ~40 µs of CPU a call from the server.
    """
    entity, project = project_id.split("/")
    path = f"/v2/{entity}/{project}/calls/complete"
    queue: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()
    for n, body in enumerate(bodies(project_id, count, batch)):
        queue.put_nowait((n, body))

    async with aiohttp.ClientSession(url, timeout=aiohttp.ClientTimeout(total=600)) as session:

        async def send() -> None:
            while not queue.empty():
                n, body = queue.get_nowait()
                auth = aiohttp.BasicAuth("api", keys[n % len(keys)])
                headers = {"content-type": "application/json"}
                async with session.post(path, data=body, auth=auth, headers=headers) as res:
                    if res.status != 200:
                        raise RuntimeError(f"batch {n}: {res.status} {await res.text()}")

        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(send() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        return count / elapsed, (time.process_time() - cpu) / count * 1e6
