"""Finding 1: clients that stop reading a /calls/stream_query answer must not hold the
database's connections, so every other tenant (and /ready) keeps being served."""

from __future__ import annotations

import base64
import json
import socket
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import IMAGEGATE_BIN, LiveServer, start_server, stop_server

CALLS = 3000
STALLED = 20  # more than SQLite's pool (5 + 10 overflow) holds


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = start_server(tmp_path_factory.mktemp("pool") / "data")
    yield live
    stop_server(live)


def seed_calls(server: LiveServer, project: str, count: int) -> None:
    """`count` calls of ~10 KB each, copied from one real generation."""
    res = httpx.post(
        f"{server.url}/image/create",
        auth=("api", server.admin_key),
        json={
            "project_id": project,
            "inputs": {"model": "local/procedural", "prompt": "seed", "size": "256x256"},
        },
        timeout=60,
    )
    assert res.status_code == 200, res.text
    db = sqlite3.connect(server.data_dir / "imagegate.db", timeout=30)
    db.row_factory = sqlite3.Row
    row = dict(db.execute("SELECT * FROM calls WHERE project_id = ?", (project,)).fetchone())
    for generated in db.execute("SELECT name FROM pragma_table_xinfo('calls') WHERE hidden > 1"):
        del row[generated["name"]]  # the database derives these
    inputs = json.dumps({**json.loads(row["inputs"]), "prompt": "p" * 10_000})
    rows = [{**row, "id": str(uuid.uuid4()), "inputs": inputs} for _ in range(count)]
    columns = ", ".join(row)
    marks = ", ".join(f":{c}" for c in row)
    with db:
        db.executemany(f"INSERT INTO calls ({columns}) VALUES ({marks})", rows)
    db.close()


def new_key(data_dir: Path, user: str, entity: str | None = None) -> str:
    args = ["--entity", entity] if entity else []
    out = subprocess.run(
        [str(IMAGEGATE_BIN), "keys", "create", "--user", user, *args, "--data-dir", str(data_dir)],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    return out.stdout.strip().splitlines()[-1]


def stalled_stream(server: LiveServer, key: str, project: str) -> socket.socket:
    """A /calls/stream_query whose client reads the first bytes, then nothing more."""
    host, port = server.url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a window that fills fast
    sock.connect((host, int(port)))
    body = json.dumps({"project_id": project}).encode()
    auth = base64.b64encode(f"api:{key}".encode()).decode()
    sock.sendall(
        b"POST /calls/stream_query HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Authorization: Basic {auth}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    sock.settimeout(30)
    assert sock.recv(64).startswith(b"HTTP/1.1 200")
    return sock


def test_stalled_readers_do_not_starve_other_tenants(server: LiveServer) -> None:
    seed_calls(server, "admin/big", CALLS)
    bob = new_key(server.data_dir, "bob")
    httpx.post(
        f"{server.url}/image/create",
        auth=("api", bob),
        json={
            "project_id": "bob/own",
            "inputs": {"model": "local/procedural", "prompt": "b", "size": "256x256"},
        },
        timeout=60,
    ).raise_for_status()
    # Three readers of one team, each within its key's limit of concurrent reads.
    readers = [server.admin_key, new_key(server.data_dir, "r2", "admin")]
    readers.append(new_key(server.data_dir, "r3", "admin"))
    sockets = []
    try:
        for i in range(STALLED):
            sockets.append(stalled_stream(server, readers[i % 3], "admin/big"))
        time.sleep(1)  # let the server fill its buffers and block on every stream
        started = time.monotonic()
        with httpx.Client(base_url=server.url, auth=("api", bob), timeout=10) as other:
            for _ in range(20):
                res = other.post("/calls/stream_query", json={"project_id": "bob/own", "limit": 5})
                assert res.status_code == 200, res.text
                assert (
                    other.post("/calls/query_stats", json={"project_id": "bob/own"}).json()["count"]
                    == 1
                )
            assert other.get("/ready").status_code == 200
        assert time.monotonic() - started < 10
    finally:
        for sock in sockets:
            sock.close()
