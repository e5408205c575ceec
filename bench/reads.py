"""Reads on a big project: /calls/stream_query with limit=100 and a full stream, on a
project holding 100,000 calls.

The calls are one real generation (made through /image/create) cloned by a bulk loader
that writes through imagegate's own engine and `calls` table, so rows are stored
exactly as the service stores them, at a rate no HTTP generation loop could reach.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from bench._harness import Server, admin_key, percentile, start_imagegate
from imagegate.config import Settings
from imagegate.core import Imagegate
from imagegate.ids import uuid7
from imagegate.store.tables import calls

PROJECT = "admin/reads"
BATCH = 5000


async def seed(data_dir: Path, template_id: str, count: int) -> float:
    """`count` copies of the call `template_id` (new ids, times, prompts); seconds taken."""
    imagegate = Imagegate(Settings.from_env(data_dir=data_dir))
    await imagegate.start()
    try:
        async with imagegate.engine.connect() as conn:
            result = await conn.execute(sa.select(calls).where(calls.c.id == template_id))
            template = dict(result.mappings().one())
        latency = template["ended_at"] - template["started_at"]
        first = template["started_at"] - timedelta(days=2)
        started = time.perf_counter()
        for offset in range(0, count, BATCH):
            rows = []
            for i in range(offset, min(count, offset + BATCH)):
                at = first + timedelta(seconds=i)
                inputs = {**template["inputs"], "prompt": f"{template['inputs']['prompt']} #{i}"}
                rows.append(
                    {
                        **template,
                        "id": uuid7(),
                        "trace_id": uuid7(),
                        "started_at": at,
                        "ended_at": at + latency,
                        "inputs": inputs,
                    }
                )
            async with imagegate.engine.begin() as conn:
                await conn.execute(calls.insert(), rows)
        return time.perf_counter() - started
    finally:
        await imagegate.close()


@dataclass
class ReadFigures:
    calls: int
    seed_s: float
    page_ms: list[float]
    full_s: list[float]
    full_bytes: int
    full_rss_mib: float
    server_rss_mib: float


def _first_call(server: Server, key: str) -> str:
    body = {
        "project_id": PROJECT,
        "inputs": {"model": "local/procedural", "prompt": "a teal owl at night", "size": "512x512"},
    }
    res = httpx.post(f"{server.url}/image/create", json=body, auth=("api", key), timeout=60)
    res.raise_for_status()
    return str(res.json()["weave_call_id"])


async def _measure(server: Server, key: str, pages: int, fulls: int) -> tuple[Any, ...]:
    page = {
        "project_id": PROJECT,
        "limit": 100,
        "sort_by": [{"field": "started_at", "direction": "desc"}],
    }
    async with httpx.AsyncClient(base_url=server.url, auth=("api", key), timeout=600) as client:
        page_ms = []
        for i in range(pages + 5):  # the first few warm the caches
            started = time.perf_counter()
            res = await client.post("/calls/stream_query", json=page)
            assert res.status_code == 200 and res.text.count("\n") == 100
            if i >= 5:
                page_ms.append((time.perf_counter() - started) * 1000)
        server.reset_peak()
        full_s, size, lines = [], 0, 0
        for _ in range(fulls):
            started = time.perf_counter()
            size = lines = 0
            async with client.stream(
                "POST", "/calls/stream_query", json={"project_id": PROJECT}
            ) as res:
                async for chunk in res.aiter_bytes():
                    size += len(chunk)
                    lines += chunk.count(b"\n")
            full_s.append(time.perf_counter() - started)
        return page_ms, full_s, size, lines, server.peak_rss_mib()


def run(work: Path, *, count: int, pages: int, fulls: int) -> ReadFigures:
    data_dir = work / "reads" / "data"
    data_dir.mkdir(parents=True)
    server = start_imagegate(data_dir, env={}, models=None)
    try:
        key = admin_key(server)
        template = _first_call(server, key)
    finally:
        server.stop()
    seed_s = asyncio.run(seed(data_dir, template, count - 1))
    server = start_imagegate(data_dir, env={}, models=None)
    try:
        page_ms, full_s, size, lines, rss = asyncio.run(_measure(server, key, pages, fulls))
        assert lines == count, f"streamed {lines} calls, expected {count}"
        return ReadFigures(count, seed_s, page_ms, full_s, size, rss, server.peak_rss_mib())
    finally:
        server.stop()


def rows(figures: ReadFigures) -> list[list[str]]:
    full = statistics.median(figures.full_s)
    return [
        [
            "reads",
            f"stream_query limit=100 ({figures.calls:,} calls)",
            str(len(figures.page_ms)),
            f"{percentile(figures.page_ms, 0.5):.1f}",
            f"{percentile(figures.page_ms, 0.99):.1f}",
            f"{1000 / statistics.mean(figures.page_ms):.0f} q/s",
            "",
            "",
            "",
        ],
        [
            "reads",
            f"stream_query full ({figures.calls:,} calls, {figures.full_bytes / 1e6:.0f} MB)",
            str(len(figures.full_s)),
            f"{full * 1000:.0f}",
            f"{max(figures.full_s) * 1000:.0f}",
            f"{figures.calls / full:,.0f} calls/s",
            "",
            f"{figures.full_rss_mib:.0f}",
            f"seeded in {figures.seed_s:.0f} s",
        ],
    ]
