"""Reads on a big project.

`python -m bench.reads --calls N --backend sqlite|postgres|both` (issue 15) loads N
realistic generation calls through the public batch API (bench/calls_loader.py), prints
the load rate, then p50/p99 of 20 runs of each read the web gallery and Weave clients
make, and the time to the first byte of a whole-project stream.

`run()` (bench/run.py's row) times /calls/stream_query with limit=100 and a full stream,
on a project holding 100,000 calls.

The calls are one real generation (made through /image/create) cloned by a bulk loader
that writes through imagegate's own engine and `calls` table, so rows are stored
exactly as the service stores them, at a rate no HTTP generation loop could reach.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import sqlalchemy as sa

from bench._harness import (
    IMAGEGATE,
    Server,
    admin_key,
    machine,
    percentile,
    start_imagegate,
)
from bench.calls_loader import MARKER, USERS, load
from imagegate.config import Settings
from imagegate.core import Imagegate
from imagegate.ids import uuid7
from imagegate.service import OP_NAME
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


# --- Reads at scale (issue 15): `python -m bench.reads --calls N --backend both` -------

SCALE_PROJECT = "admin/scale"
RUNS = 20


@dataclass
class Operation:
    name: str
    method: str
    path: str
    body: dict[str, Any] | None = None
    lines: int | None = None  # JSON lines a stream_query answer must carry


def operations(count: int, user_id: str) -> list[Operation]:
    """The issue's table: each read as an HTTP request, with what its answer must hold."""
    p = SCALE_PROJECT
    newest = [{"field": "started_at", "direction": "desc"}]

    def stream(name: str, lines: int | None = 100, **body: Any) -> Operation:
        q = {"project_id": p, "limit": 100, "sort_by": newest, **body}
        return Operation(name, "POST", "/calls/stream_query", q, lines)

    def eq(path: str, value: str) -> dict[str, Any]:
        return {"$expr": {"$eq": [{"$getField": path}, {"$literal": value}]}}

    contains = {"$expr": {"$contains": {"input": {"$getField": "inputs.prompt"},
                "substr": {"$literal": MARKER}, "case_insensitive": True}}}  # fmt: skip
    until = datetime.now(UTC)
    since = until - timedelta(days=30)
    window = urlencode({"since": since.isoformat(), "until": until.isoformat()})
    return [
        stream("stream_query limit 100, newest first"),
        stream("$contains on the prompt (0.1% match), newest first", None, query=contains),
        stream(
            "op_names + wb_user_ids, newest first",
            filter={"op_names": [OP_NAME], "wb_user_ids": [user_id]},
        ),
        stream("status == error, newest first", query=eq("summary.weave.status", "error")),
        Operation("query_stats, whole project", "POST", "/calls/query_stats", {"project_id": p}),
        Operation(
            "query_stats, inputs.model == X",
            "POST",
            "/calls/query_stats",
            {"project_id": p, "query": eq("inputs.model", "dall-e-3")},
        ),
        Operation("gallery first page", "GET", f"/ui/p/{p}"),
        Operation("gallery with a prompt search", "GET", f"/ui/p/{p}?q={MARKER}"),
        Operation("spend over 30 days", "GET", f"/projects/{p}/spend?{window}"),
        stream(f"offset {count // 2:,}, newest first", offset=count // 2),
        stream(
            "Traces page (roots, newest first, 50)",
            50,
            limit=50,
            filter={"trace_roots_only": True},
            columns=["id", "op_name", "started_at", "ended_at", "summary", "exception"],
        ),
    ]


async def _sign_in(client: httpx.AsyncClient, key: str) -> None:
    page = await client.get("/ui/signin")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token, "no CSRF token on the sign-in page"
    res = await client.post("/ui/signin", data={"csrf_token": token[1], "api_key": key, "next": ""})
    assert res.status_code == 303, res.text


async def _time(client: httpx.AsyncClient, op: Operation) -> float:
    started = time.perf_counter()
    if op.method == "GET":
        res = await client.get(op.path)
    else:
        res = await client.post(op.path, json=op.body)
    elapsed = (time.perf_counter() - started) * 1000
    assert res.status_code == 200, f"{op.name}: {res.status_code} {res.text[:300]}"
    if op.lines is not None:
        assert res.text.count("\n") == op.lines, f"{op.name}: {res.text.count(chr(10))} lines"
    return elapsed


async def _first_byte(client: httpx.AsyncClient) -> float:
    """Time to the first byte of a whole-project stream, newest first."""
    body = {"project_id": SCALE_PROJECT, "sort_by": [{"field": "started_at", "direction": "desc"}]}
    started = time.perf_counter()
    async with client.stream("POST", "/calls/stream_query", json=body) as res:
        assert res.status_code == 200
        async for _ in res.aiter_raw():
            return (time.perf_counter() - started) * 1000
    raise AssertionError("empty stream")


async def measure_scale(url: str, key: str, count: int, runs: int) -> list[tuple[str, list[float]]]:
    async with httpx.AsyncClient(base_url=url, auth=("api", key), timeout=600) as client:
        await _sign_in(client, key)
        res = await client.post(
            "/calls/stream_query",
            json={"project_id": SCALE_PROJECT, "limit": 1, "columns": ["wb_user_id"]},
        )
        user_id = json.loads(res.text)["wb_user_id"]
        table = []
        for op in operations(count, user_id):
            await _time(client, op)  # warm: plans, caches, the page's templates
            table.append((op.name, [await _time(client, op) for _ in range(runs)]))
        await _first_byte(client)
        table.append(
            ("stream_query time to first byte", [await _first_byte(client) for _ in range(runs)])
        )
        return table


def _scale_keys(server: Server, data_dir: Path, env: dict[str, str]) -> list[str]:
    """One key per user (USERS of them, all in entity "admin"), made with the CLI."""
    keys = [admin_key(server)]
    for i in range(1, USERS):
        out = subprocess.run(
            [str(IMAGEGATE), "keys", "create", "--user", f"user{i:02}", "--entity", "admin",
             "--data-dir", str(data_dir)],
            env={**os.environ, **env}, capture_output=True, text=True, check=True,
        )  # fmt: skip
        keys.append(out.stdout.strip().splitlines()[-1])
    return keys


def run_scale(work: Path, backend: str, count: int, runs: int) -> tuple[float, list[Any]]:
    """Start a server on `backend`, load `count` calls through the API, time the reads."""
    data_dir = work / backend / "data"
    data_dir.mkdir(parents=True)
    env: dict[str, str] = {}
    pg = None
    if backend == "postgres":
        from tests.backends import PgCluster

        pg = PgCluster.create()
        env["IMAGEGATE_DATABASE_URL"] = pg.url(pg.create_database())
    server = start_imagegate(data_dir, env=env, models=None)
    try:
        keys = _scale_keys(server, data_dir, env)
        rate = asyncio.run(load(server.url, SCALE_PROJECT, keys, count))
        print(f"{backend}: loaded {count:,} calls at {rate:,.0f} calls/s", flush=True)
        if pg is not None:  # what autovacuum would do soon after a bulk load
            _vacuum(pg, env["IMAGEGATE_DATABASE_URL"].rsplit("/", 1)[1])
        return rate, asyncio.run(measure_scale(server.url, keys[0], count, runs))
    finally:
        server.stop()
        if pg is not None:
            pg.stop()


def _vacuum(pg: Any, database: str) -> None:
    from tests.backends import PG_BIN

    subprocess.run(
        [str(PG_BIN / "psql"), "-X", "-q", "-h", "127.0.0.1", "-p", str(pg.port), "-U",
         "postgres", "-d", database, "-c", "VACUUM ANALYZE calls"],
        check=True, timeout=3600,
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--runs", type=int, default=RUNS)
    args = parser.parse_args()
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    print(machine())
    results = {}
    with tempfile.TemporaryDirectory(prefix="reads-scale-") as tmp:
        for backend in backends:
            results[backend] = run_scale(Path(tmp), backend, args.calls, args.runs)
    print(f"\n{args.calls:,} calls, p50 / p99 of {args.runs} runs, ms")
    for backend, (rate, _) in results.items():
        print(f"load through /v2/.../calls/complete, {backend}: {rate:,.0f} calls/s")
    headers = ["operation"] + [f"{b} p50 / p99" for b in results]
    names = [name for name, _ in next(iter(results.values()))[1]]
    rows_ = []
    for i, name in enumerate(names):
        cells = []
        for _, table in results.values():
            times = table[i][1]
            cells.append(f"{percentile(times, 0.5):,.1f} / {percentile(times, 0.99):,.1f}")
        rows_.append([name, *cells])
    print("\n| " + " | ".join(headers) + " |")
    print("|" + "---|" * len(headers))
    for row in rows_:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
