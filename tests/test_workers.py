"""`imagegate serve --workers N`: real multi-process servers on SQLite and PostgreSQL.
Start-up work (migrations, crash recovery, the first admin key) runs once, in the
supervising process, under a lock; the workers share the load and the access cache's
one-second contract holds across them."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import Backend, LiveServer, start_server, stop_server
from tests.fake_openai import FakeOpenAI, Gate, Reply

WORKERS = 3


def _models(tmp_path: Path, fake: FakeOpenAI) -> dict[str, str]:
    models = tmp_path / "models.toml"
    models.write_text(
        f"""
[models."test/gated"]
provider = "openai"
upstream_model = "gated"
base_url = "{fake.url}/v1"
params = ["size"]
size_range = [64, 2048]
max_attempts = 1
"""
    )
    return {"IMAGEGATE_MODELS": str(models), "OPENAI_API_KEY": "sk-workers-0123456789"}


async def test_workers_share_the_load_and_a_revocation(tmp_path: Path, backend: Backend) -> None:
    server = start_server(tmp_path / "data", backend.env, ["--workers", str(WORKERS)])
    try:
        text = "".join(server.output)
        assert f"({WORKERS} workers)" in text
        assert text.count("Created user 'admin'") == 1  # one admin key, made once
        body = {
            "project_id": "admin/many",
            "inputs": {"model": "local/procedural", "prompt": "a fox", "size": "256x256"},
        }
        async with httpx.AsyncClient(
            base_url=server.url, auth=("api", server.admin_key), timeout=120
        ) as client:
            answers = await asyncio.gather(
                *(client.post("/image/create", json=body) for _ in range(60))
            )
            assert collections.Counter(a.status_code for a in answers) == {200: 60}
            # Every worker started (and none of them migrated or recovered on its own).
            deadline = time.monotonic() + 30
            while "".join(server.output).count("Application startup complete") < WORKERS:
                assert time.monotonic() < deadline, "".join(server.output)
                await asyncio.sleep(0.1)
            assert len(_worker_pids(server)) == WORKERS

            made = await client.post("/admin/keys", json={"user": "una", "entity": "una"})
            assert made.status_code == 201, made.text
            key = made.json()["key"]

            async def statuses() -> set[int]:
                # Several requests, so several workers answer (each has its own cache).
                found = await asyncio.gather(
                    *(
                        client.post(
                            "/calls/query_stats", json={"project_id": "una/p"}, auth=("api", key)
                        )
                        for _ in range(3 * WORKERS)
                    )
                )
                return {res.status_code for res in found}

            assert await statuses() == {200}
            assert (await client.delete(f"/admin/keys/{key}")).status_code == 200
            revoked_at = time.monotonic()
            while (seen := await statuses()) != {401}:
                assert time.monotonic() - revoked_at < 1.0, f"still answered {seen} after 1 s"
                await asyncio.sleep(0.02)
    finally:
        stop_server(server)


async def test_a_second_server_on_the_same_sqlite_file_leaves_live_calls_alone(
    tmp_path: Path, backend: Backend, fake: FakeOpenAI
) -> None:
    if backend.name != "sqlite":
        pytest.skip("PostgreSQL replicas only ever recover stale calls (test_recovery)")
    env = _models(tmp_path, fake)
    data = tmp_path / "data"
    first = start_server(data, env, ["--workers", "2"])
    second = None
    gate = Gate()
    fake.push(Reply(gate=gate))
    body = {"project_id": "admin/live", "inputs": {"model": "test/gated", "prompt": "owl"}}
    try:
        async with httpx.AsyncClient(
            base_url=first.url, auth=("api", first.admin_key), timeout=120
        ) as client:
            pending = asyncio.create_task(client.post("/image/create", json=body))
            await gate.until_held()  # the generation is recorded and at the provider
            # Another server starts on the same file while that call runs.
            second = start_server(data, env, ["--workers", "2"])
            # Its start-up did not take the running call for a crash's orphan.
            found = await client.post(
                f"{second.url}/calls/stream_query", json={"project_id": "admin/live"}
            )
            assert found.status_code == 200, found.text
            running = [json.loads(line) for line in found.text.splitlines() if line.strip()]
            assert len(running) == 1
            assert running[0]["ended_at"] is None and running[0]["exception"] is None
            gate.open()
            answer = await pending
            assert answer.status_code == 200, answer.text
            assert "error" not in answer.json()["response"]
            call_id = answer.json()["weave_call_id"]
            call = await client.post("/call/read", json={"project_id": "admin/live", "id": call_id})
            assert call.json()["call"]["exception"] is None
    finally:
        if second is not None:
            stop_server(second)
        stop_server(first)


async def test_a_restart_after_a_crash_ends_the_calls_it_left(
    tmp_path: Path, backend: Backend, fake: FakeOpenAI
) -> None:
    if backend.name != "sqlite":
        pytest.skip("PostgreSQL replicas only ever recover stale calls (test_recovery)")
    env = _models(tmp_path, fake)
    data = tmp_path / "data"
    server = start_server(data, env, ["--workers", "2"])
    gate = Gate()
    fake.push(Reply(gate=gate))
    body = {"project_id": "admin/crash", "inputs": {"model": "test/gated", "prompt": "owl"}}
    async with httpx.AsyncClient(
        base_url=server.url, auth=("api", server.admin_key), timeout=120
    ) as client:
        pending = asyncio.create_task(client.post("/image/create", json=body))
        await gate.until_held()
        # The whole server dies at once: the supervisor and its workers.
        for pid in (server.process.pid, *_worker_pids(server)):
            os.kill(pid, signal.SIGKILL)
        server.process.wait(timeout=10)
        with pytest.raises(httpx.HTTPError):
            await pending
    gate.open()
    restarted = start_server(data, env, ["--workers", "2"])
    try:
        async with httpx.AsyncClient(
            base_url=restarted.url, auth=("api", server.admin_key), timeout=60
        ) as client:
            found = await client.post("/calls/stream_query", json={"project_id": "admin/crash"})
            calls = [line for line in found.text.splitlines() if line.strip()]
            assert len(calls) == 1 and '"interrupted' in calls[0], found.text
        # Counted once for the server (by its supervisor), not once per worker.
        for _ in range(4):
            async with httpx.AsyncClient(base_url=restarted.url, timeout=60) as fresh:
                text = (await fresh.get("/metrics")).text
            assert "\nimagegate_interrupted_calls_total 1.0\n" in text
    finally:
        stop_server(restarted)


def _worker_pids(server: LiveServer) -> set[int]:
    return {
        int(line.split("[")[1].split("]")[0])
        for line in server.output
        if "Started server process" in line
    }


GENERATED = 'imagegate_generations_total{model="local/procedural",status="success"}'


async def test_metrics_count_the_whole_server_through_a_worker_restart(tmp_path: Path) -> None:
    server = start_server(tmp_path / "data", {}, ["--workers", str(WORKERS)])
    try:
        async with httpx.AsyncClient(
            base_url=server.url, auth=("api", server.admin_key), timeout=120
        ) as client:
            await _generate(client, 30)
            await _started(server, WORKERS)
            # The load was shared, so no single worker's own count is the total.
            by_worker = _generations_by_process(server)
            assert sum(by_worker.values()) == 30 and len(by_worker) >= 2, by_worker
            seen = await _scrapes(server, 3 * WORKERS)
            assert set(seen) == {30}, seen

            # A worker that counted some of them dies; its counts stay in the totals.
            victim = max(by_worker, key=lambda pid: by_worker[pid])
            os.kill(victim, signal.SIGKILL)
            seen = await _scrapes(server, 2 * WORKERS)
            await _started(server, WORKERS + 1)  # its replacement is serving
            await _generate(client, 30)
            seen += await _scrapes(server, 3 * WORKERS)
            assert seen == sorted(seen) and seen[-1] == 60, seen
            assert set(seen[-3 * WORKERS :]) == {60}, seen
            assert sum(_generations_by_process(server).values()) == 60
            http = [
                line
                for line in (await client.get("/metrics")).text.splitlines()
                if line.startswith('imagegate_http_requests_total{method="POST",route="/image/cr')
            ]
            assert http == [
                'imagegate_http_requests_total{method="POST",route="/image/create",status="200"}'
                " 60.0"
            ]
        stop_server(server)
        # The supervisor removes the shared files when it stops.
        assert list((server.data_dir / "metrics").iterdir()) == []
    finally:
        stop_server(server)


async def _generate(client: httpx.AsyncClient, count: int) -> None:
    body = {
        "project_id": "admin/metrics",
        "inputs": {"model": "local/procedural", "prompt": "a fox", "size": "256x256"},
    }
    answers = await asyncio.gather(*(client.post("/image/create", json=body) for _ in range(count)))
    assert collections.Counter(a.status_code for a in answers) == {200: count}


async def _scrapes(server: LiveServer, count: int) -> list[int]:
    """The total of generations in `count` scrapes, each on a new connection (so any
    worker may answer it), one after the other."""
    totals = []
    for _ in range(count):
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as fresh:
            text = (await fresh.get("/metrics")).text
        found = [line for line in text.splitlines() if line.startswith(GENERATED)]
        totals.append(int(float(found[0].split()[-1])) if found else 0)
    return totals


async def _started(server: LiveServer, count: int) -> None:
    deadline = time.monotonic() + 30
    while "".join(server.output).count("Application startup complete") < count:
        assert time.monotonic() < deadline, "".join(server.output)
        await asyncio.sleep(0.1)


def _generations_by_process(server: LiveServer) -> dict[int, float]:
    """Each process's own count, from the files they share (prometheus_client's format)."""
    from prometheus_client.multiprocess import MultiProcessCollector

    counts = {}
    for shared in (server.data_dir / "metrics").glob("*/counter_*.db"):
        pid = int(shared.stem.split("_")[1])
        for metric in MultiProcessCollector.merge([str(shared)]):
            for sample in metric.samples:
                if sample.name == "imagegate_generations_total" and sample.value:
                    counts[pid] = counts.get(pid, 0) + sample.value
    return counts
