"""Recovery after a crash: which unfinished calls a starting server ends, and when."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from imagegate.app import create_app
from imagegate.config import Settings
from imagegate.core import Imagegate
from imagegate.ids import uuid7
from imagegate.recovery import INTERRUPTED, Recovery, RecoveryPolicy
from imagegate.service import OP_NAME
from imagegate.store import LocalFileStore

PROJECT = "alice/recovery"


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Imagegate]:
    """A server's lifespan, start-up sweep included (a restart, or another replica)."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield app.state.imagegate


async def start_call(imagegate: Imagegate, started_at: datetime) -> str:
    await imagegate.accounts.ensure_project(PROJECT)
    call_id = uuid7()
    await imagegate.calls.start(
        {
            "id": call_id,
            "project_id": PROJECT,
            "op_name": OP_NAME,
            "trace_id": uuid7(),
            "started_at": started_at,
            "attributes": {},
            "inputs": {"prompt": "never finished"},
        }
    )
    return call_id


async def status(imagegate: Imagegate, call_id: str) -> tuple[str, str | None]:
    call = await imagegate.calls.read(PROJECT, call_id)
    assert call is not None
    return call["summary"]["weave"]["status"], call["exception"]


async def test_start_up_ends_orphaned_calls_but_not_a_live_replicas(
    settings: Settings, backend
) -> None:
    async with running(settings) as first:
        await first.accounts.create_key("alice")
        stale = timedelta(seconds=RecoveryPolicy.stale_after_s + 600)
        old = await start_call(first, datetime.now(UTC) - stale)
        fresh = await start_call(first, datetime.now(UTC))
        # A second server starts on the same database while the first still runs.
        async with running(settings) as second:
            assert await status(second, old) == ("error", INTERRUPTED)
            if backend.name == "sqlite":
                # SQLite has one server process: whatever it finds unfinished is an orphan.
                assert await status(second, fresh) == ("error", INTERRUPTED)
            else:
                # A shared PostgreSQL: the fresh call may be a live replica's, left alone.
                assert await status(second, fresh) == ("running", None)
            call = await second.calls.read(PROJECT, old)
            assert call is not None and call["output"] is None and call["ended_at"]
            assert call["summary"]["error"]["type"] == "interrupted"


async def test_a_finish_after_the_sweep_wins(settings: Settings) -> None:
    async with running(settings) as imagegate:
        await imagegate.accounts.create_key("alice")
        call_id = await start_call(imagegate, datetime.now(UTC))
        assert await Recovery(imagegate).sweep(None) == 1
        await imagegate.calls.finish(
            call_id, ended_at=datetime.now(UTC), output={"data": []}, summary={}, exception=None
        )
        assert await status(imagegate, call_id) == ("success", None)


async def test_the_background_sweep_ends_stale_calls(settings: Settings) -> None:
    async with running(settings) as imagegate:
        await imagegate.accounts.create_key("alice")
        recovery = Recovery(imagegate, RecoveryPolicy(stale_after_s=0.2, interval_s=0.05))
        await recovery.start()
        try:
            call_id = await start_call(imagegate, datetime.now(UTC))
            deadline = time.monotonic() + 30
            while (await status(imagegate, call_id))[0] == "running":
                assert time.monotonic() < deadline, "the stale call was never swept"
                await asyncio.sleep(0.05)
        finally:
            await recovery.stop()
        assert await status(imagegate, call_id) == ("error", INTERRUPTED)


@pytest.mark.parametrize("database", ["sqlite", "shared"])
async def test_start_up_removes_temp_files_a_killed_write_left(
    tmp_path: Path, database: str
) -> None:
    store = LocalFileStore(tmp_path / "files")
    digest = await store.put(PROJECT, b"complete")
    folder = tmp_path / "files" / "alice" / "recovery" / digest[:2]
    old, new = folder / ".tmp-old", folder / ".tmp-new"
    old.write_bytes(b"half")
    new.write_bytes(b"half")
    an_hour_ago = time.time() - 3600
    os.utime(old, (an_hour_ago, an_hour_ago))
    # A shared store (PostgreSQL replicas) only loses temp files older than the threshold.
    removed = await store.remove_temp_files(None if database == "sqlite" else 900)
    assert not old.exists()
    assert new.exists() == (database == "shared")
    assert removed == (2 if database == "sqlite" else 1)
    assert await store.get(PROJECT, digest) == b"complete"
