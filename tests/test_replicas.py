"""Real `imagegate serve` processes on PostgreSQL + S3: three replicas sharing one database
and one bucket, and the command-line options that select them."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from imagegate.config import Settings
from imagegate.digest import weave_digest
from tests.backends import PgCluster, S3Server, stored_files
from tests.conftest import start_server, stop_server
from tests.scale import Replicas, generate_many, start_replicas

GENERATIONS = 300
CONCURRENCY = 48


@pytest.fixture(scope="module")
def replicas(
    pg_cluster: PgCluster, s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Replicas]:
    group = start_replicas(pg_cluster, s3_server, tmp_path_factory.mktemp("replicas"))
    yield group
    group.stop()
    pg_cluster.drop_database(group.database)


async def gather_bounded(coros: list[Any], limit: int = CONCURRENCY) -> list[Any]:
    gate = asyncio.Semaphore(limit)

    async def run(coro: Any) -> Any:
        async with gate:
            return await coro

    return await asyncio.gather(*(run(c) for c in coros))


async def test_concurrent_generations_over_three_replicas(
    replicas: Replicas, capsys: pytest.CaptureFixture[str]
) -> None:
    project = "admin/scale"
    load = await generate_many(
        replicas.urls,
        replicas.admin_key,
        count=GENERATIONS,
        concurrency=CONCURRENCY,
        project=project,
    )
    with capsys.disabled():
        print(f"\n  {load.summary(len(replicas.urls), CONCURRENCY)}")
    assert [a.status for a in load.answers] == [200] * GENERATIONS
    assert {a.replica for a in load.answers} == {0, 1, 2}
    ids = [a.body["weave_call_id"] for a in load.answers]
    assert len(set(ids)) == GENERATIONS  # no duplicate

    # Each answer names its image by a Content reference (read back below).
    digests = {}
    for answer in load.answers:
        (item,) = answer.body["response"]["data"]
        assert item["b64_json"]["files"]["content"] == item["content"]["digest"]
        digests[answer.body["weave_call_id"]] = item["content"]["digest"]

    async with httpx.AsyncClient(auth=("api", replicas.admin_key), timeout=60) as client:
        # Every replica lists exactly the calls that were answered: none missing, none extra.
        for url in replicas.urls:
            res = await client.post(f"{url}/calls/stream_query", json={"project_id": project})
            listed = [line for line in res.text.splitlines() if line]
            assert len(listed) == GENERATIONS
            assert {json.loads(line)["id"] for line in listed} == set(ids)

        # Every call is readable from every replica, and names the image it answered with.
        async def read(url: str, call_id: str) -> tuple[str, dict[str, Any] | None]:
            res = await client.post(f"{url}/call/read", json={"project_id": project, "id": call_id})
            return call_id, res.json()["call"]

        reads = await gather_bounded([read(url, i) for url in replicas.urls for i in ids])
        assert len(reads) == GENERATIONS * len(replicas.urls)
        for call_id, call in reads:
            assert call is not None and call["id"] == call_id
            assert call["summary"]["weave"]["status"] == "success"
            assert call["output"]["data"][0]["b64_json"]["files"]["content"] == digests[call_id]

        # Every image is in the shared bucket: read each through another replica.
        async def content(url: str, digest: str) -> tuple[str, bytes]:
            res = await client.post(
                f"{url}/file/content", json={"project_id": project, "digest": digest}
            )
            return digest, res.content

        files = await gather_bounded(
            [
                content(replicas.urls[(a.replica + 1) % 3], digests[a.body["weave_call_id"]])
                for a in load.answers
            ]
        )
        for digest, data in files:
            assert weave_digest(data) == digest


async def test_same_retry_id_on_two_replicas_at_once_generates_once(replicas: Replicas) -> None:
    async with httpx.AsyncClient(auth=("api", replicas.admin_key), timeout=120) as client:
        for attempt in range(5):
            project = f"admin/retry-{attempt}"
            # Large enough that both requests are in flight together.
            body = {
                "project_id": project,
                "inputs": {"model": "local/procedural", "prompt": "teal owl", "size": "1536x1536"},
            }
            headers = {"X-Weave-Retry-Id": str(uuid.uuid4())}
            first, second = await asyncio.gather(
                *(
                    client.post(f"{url}/image/create", json=body, headers=headers)
                    for url in replicas.urls[:2]
                )
            )
            assert first.status_code == second.status_code == 200, (first.text, second.text)
            assert first.json()["weave_call_id"] == second.json()["weave_call_id"]
            assert first.json() == second.json()
            # Exactly one generation happened: the database recorded one call.
            for url in replicas.urls:
                stats = await client.post(f"{url}/calls/query_stats", json={"project_id": project})
                assert stats.json()["count"] == 1


async def test_serve_takes_database_and_files_urls(
    pg_cluster: PgCluster, s3_server: S3Server, tmp_path: Path
) -> None:
    database = pg_cluster.create_database()
    files_url = s3_server.files_url()
    server = start_server(
        tmp_path / "data",
        s3_server.env(),
        ["--database-url", pg_cluster.url(database), "--files-url", files_url],
    )
    try:
        async with httpx.AsyncClient(auth=("api", server.admin_key), timeout=60) as client:
            body = {
                "project_id": "admin/cli",
                "inputs": {"model": "local/procedural", "prompt": "x"},
            }
            res = await client.post(f"{server.url}/image/create", json=body)
            assert res.status_code == 200, res.text
            assert (await client.get(f"{server.url}/ready")).json() == {"status": "ready"}
    finally:
        stop_server(server)
        pg_cluster.drop_database(database)
    digest = res.json()["response"]["data"][0]["content"]["digest"]
    stored = await stored_files(Settings(data_dir=tmp_path, files_url=files_url), "admin/cli")
    assert f"admin/cli/{digest[:2]}/{digest}" in stored
    # Nothing went to the data dir's defaults.
    assert not (tmp_path / "data" / "imagegate.db").exists()
    assert not (tmp_path / "data" / "files").exists()
