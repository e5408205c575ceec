"""Real `imagegate serve` processes on PostgreSQL + S3: three replicas sharing one database
and one bucket, and the command-line options that select them."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from imagegate.config import Settings
from imagegate.digest import weave_digest
from tests.backends import PgCluster, S3Server, stored_files
from tests.conftest import start_server, stop_server
from tests.fake_openai import FakeOpenAI, Gate, Reply
from tests.scale import Replicas, generate_many, start_replicas

GENERATIONS = 300
CONCURRENCY = 48


@pytest.fixture(scope="module")
def replicas(
    pg_cluster: PgCluster,
    s3_server: S3Server,
    tmp_path_factory: pytest.TempPathFactory,
    fake: FakeOpenAI,
) -> Iterator[Replicas]:
    root = tmp_path_factory.mktemp("replicas")
    models = root / "models.toml"
    # A model at the fake OpenAI server, whose gate holds a generation while it runs.
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
    env = {"IMAGEGATE_MODELS": str(models), "OPENAI_API_KEY": "sk-replicas-0123456789"}
    group = start_replicas(pg_cluster, s3_server, root, extra_env=env)
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
    marks = replicas.log_marks()
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
    # Each replica's own access log shows it answered its third of the load (the log line
    # follows the response, so give it a moment to appear).
    share = [sum(a.replica == i for a in load.answers) for i in range(3)]
    assert share == [GENERATIONS // 3] * 3
    await until(lambda: replicas.served(marks) == share, "every replica's access log")
    with capsys.disabled():
        served = replicas.served(marks)
        print(f"  200s for POST /image/create in each replica's access log: {served}")
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


async def test_same_retry_id_on_two_replicas_at_once_generates_once(
    replicas: Replicas, fake: FakeOpenAI, pg_cluster: PgCluster
) -> None:
    """Replica 0 starts the generation and is held at the provider; the repeat goes to
    replica 1 meanwhile. The repeat must find the key taken in the shared database, wait,
    and answer with replica 0's result once the provider answers."""
    for attempt in range(3):
        await race_on_two_replicas(replicas, fake, pg_cluster, f"admin/retry-{attempt}")


async def race_on_two_replicas(
    replicas: Replicas, fake: FakeOpenAI, pg_cluster: PgCluster, project: str
) -> None:
    fake.reset()
    gate = Gate()
    fake.push(Reply(gate=gate))
    body = {"project_id": project, "inputs": {"model": "test/gated", "prompt": "owl"}}
    retry_id = str(uuid.uuid4())
    marks = replicas.log_marks()
    pg_log = pg_cluster.root / "server.log"
    async with httpx.AsyncClient(auth=("api", replicas.admin_key), timeout=120) as client:

        def post(replica: int) -> Any:
            url = replicas.urls[replica]
            headers = {"X-Weave-Retry-Id": retry_id}
            return client.post(f"{url}/image/create", json=body, headers=headers)

        first = asyncio.create_task(post(0))
        await gate.until_held()  # replica 0's generation is at the provider, held
        second = asyncio.create_task(post(1))
        # PostgreSQL's own log: the repeat's INSERT of the key was refused (the primary
        # key is taken), so replica 1 reached its claim while replica 0 held the key.
        refused = f"{retry_id}) already exists"
        await until(lambda: refused in pg_log.read_text(), "the repeat's refused claim")
        state = pg_cluster.psql(
            f"SELECT state FROM idempotency_keys WHERE key = '{retry_id}'", replicas.database
        ).strip()
        assert state == "running"
        await asyncio.sleep(0.5)  # a repeat that did not wait would have answered by now
        assert not first.done() and not second.done()
        assert len(fake.requests) == 1
        gate.open()
        a, b = await asyncio.gather(first, second)
        assert a.status_code == b.status_code == 200, (a.text, b.text)
        assert a.json() == b.json() and "data" in a.json()["response"]
        assert len(fake.requests) == 1  # one generation at the provider
        # Each replica's access log: replica 0 and replica 1 each answered one.
        await until(lambda: replicas.served(marks) == [1, 1, 0], "the access logs")
        # Exactly one generation happened: the database recorded one call.
        for url in replicas.urls:
            stats = await client.post(f"{url}/calls/query_stats", json={"project_id": project})
            assert stats.json()["count"] == 1
    print(
        f"RACE test_same_retry_id_on_two_replicas_at_once_generates_once[{project}]: "
        f"replica 0 held at the provider; replica 1's claim refused by PostgreSQL "
        f"({refused!r} in its log) while the key was {state!r}; both still pending 0.5s "
        f"later; once the gate opened both answered call {a.json()['weave_call_id']}; "
        f"provider requests 1; 200s in each replica's access log {replicas.served(marks)}"
    )


async def until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        await asyncio.sleep(0.05)


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
