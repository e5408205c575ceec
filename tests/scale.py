"""Several `imagegate serve` replicas on one PostgreSQL + one S3 bucket, and a load
generator for them. Shared by tests/test_replicas.py and bench/replicas.py."""

from __future__ import annotations

import asyncio
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.backends import PgCluster, S3Server
from tests.conftest import LiveServer, start_server, stop_server


@dataclass
class Replicas:
    servers: list[LiveServer]
    admin_key: str
    database: str

    @property
    def urls(self) -> list[str]:
        return [server.url for server in self.servers]

    def stop(self) -> None:
        for server in self.servers:
            stop_server(server)

    def log_marks(self) -> list[int]:
        """Where each replica's output ends now: pass to `served` to count from here."""
        return [len(server.output) for server in self.servers]

    def served(self, marks: list[int], request: str = "POST /image/create") -> list[int]:
        """How many `request`s each replica answered with 200 since `marks`, from its own
        access log: the server's word for which replica served what."""
        line = f'"{request} HTTP/1.1" 200'
        return [
            sum(line in entry for entry in server.output[mark:])
            for server, mark in zip(self.servers, marks, strict=True)
        ]


def start_replicas(
    pg: PgCluster, s3: S3Server, root: Path, count: int = 3, extra_env: dict[str, str] | None = None
) -> Replicas:
    """`count` replicas on a fresh database and bucket prefix, all started at once (so
    they migrate and bootstrap concurrently), sharing one URL-signing secret."""
    database = pg.create_database()
    env = {
        **s3.env(),
        "IMAGEGATE_DATABASE_URL": pg.url(database),
        "IMAGEGATE_FILES_URL": s3.files_url(),
        "IMAGEGATE_SECRET_KEY": secrets.token_urlsafe(32),
        **(extra_env or {}),
    }
    with ThreadPoolExecutor(count) as pool:
        servers = list(pool.map(lambda i: start_server(root / f"r{i}", env), range(count)))
    keys = [server.admin_key for server in servers if server.admin_key]
    if len(keys) != 1:
        for server in servers:
            stop_server(server)
        raise RuntimeError(f"expected exactly one replica to create the admin key, got {keys}")
    return Replicas(servers, keys[0], database)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@dataclass
class Answer:
    replica: int
    status: int
    body: dict[str, Any]
    ms: float


@dataclass
class Load:
    answers: list[Answer]
    seconds: float

    @property
    def rate(self) -> float:
        return len(self.answers) / self.seconds

    def summary(self, replicas: int, concurrency: int) -> str:
        ms = [a.ms for a in self.answers]
        return (
            f"{len(self.answers)} generations over {replicas} replicas "
            f"(concurrency {concurrency}): {self.rate:.1f} gen/s, "
            f"p50 {percentile(ms, 0.50):.0f} ms, p99 {percentile(ms, 0.99):.0f} ms"
        )


async def generate_many(
    urls: list[str],
    key: str,
    *,
    count: int,
    concurrency: int,
    project: str,
    size: str = "256x256",
) -> Load:
    """`count` generations spread round-robin over `urls`, at most `concurrency` at once."""
    gate = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(auth=("api", key), timeout=120, limits=limits) as client:

        async def one(i: int) -> Answer:
            body = {
                "project_id": project,
                "inputs": {
                    "model": "local/procedural",
                    "prompt": f"a red fox in a blue forest, number {i}",
                    "size": size,
                    "seed": i,
                },
            }
            async with gate:
                started = time.perf_counter()
                res = await client.post(f"{urls[i % len(urls)]}/image/create", json=body)
                ms = (time.perf_counter() - started) * 1000
            return Answer(i % len(urls), res.status_code, res.json(), ms)

        started = time.perf_counter()
        answers = await asyncio.gather(*(one(i) for i in range(count)))
        return Load(list(answers), time.perf_counter() - started)
