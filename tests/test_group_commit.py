"""Group commit: concurrent generations' call records share one transaction, and each
request still hears its own outcome (recorded, refused by its budget, or failed)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from imagegate.core import Imagegate
from imagegate.errors import BudgetExceeded
from imagegate.ids import uuid7
from imagegate.store.budgets import BudgetStore
from imagegate.store.tables import budget_windows, calls
from tests.conftest import Backend, Users, basic


def record(project_id: str) -> dict[str, Any]:
    return {
        "id": uuid7(),
        "project_id": project_id,
        "op_name": "test.op",
        "display_name": None,
        "trace_id": uuid7(),
        "parent_id": None,
        "started_at": datetime.now(UTC),
        "attributes": {},
        "inputs": {"prompt": "a red fox"},
        "wb_user_id": None,
    }


@pytest.fixture
def commits() -> Iterator[list[str]]:
    """Every engine's commits while the test runs: on SQLite the group commit has an
    engine of its own (store/db.py's SQLiteThread)."""
    seen: list[str] = []

    def count(_conn: Any) -> None:
        seen.append("c")

    sa.event.listen(sa.Engine, "commit", count)
    yield seen
    sa.event.remove(sa.Engine, "commit", count)


async def stored(imagegate: Imagegate, ids: list[str]) -> dict[str, Any]:
    async with imagegate.engine.connect() as conn:
        rows = await conn.execute(
            sa.select(calls.c.id, calls.c.ended_at, calls.c.output).where(calls.c.id.in_(ids))
        )
        return {row.id: row for row in rows}


async def test_writes_queued_together_commit_together(
    imagegate: Imagegate, users: Users, commits: list[str]
) -> None:
    await imagegate.accounts.ensure_project("acme/batch")
    commits.clear()
    writer = imagegate.generation.writer
    records = [record("acme/batch") for _ in range(20)]
    await asyncio.gather(*(writer.start(r, (), None) for r in records))
    assert len(commits) == 1  # twenty starts, one transaction
    ended = datetime.now(UTC)
    await asyncio.gather(
        *(
            writer.finish(
                r["id"],
                ended_at=ended,
                output={"n": i},
                summary={},
                exception=None,
                held=[],
                cost=0.0,
            )
            for i, r in enumerate(records)
        )
    )
    assert len(commits) == 2
    rows = await stored(imagegate, [r["id"] for r in records])
    assert [rows[r["id"]].output for r in records] == [{"n": i} for i in range(20)]
    assert all(row.ended_at is not None for row in rows.values())


async def test_a_failing_write_fails_only_its_own_request(
    imagegate: Imagegate, users: Users
) -> None:
    await imagegate.accounts.ensure_project("acme/batch")
    writer = imagegate.generation.writer
    good = [record("acme/batch"), record("acme/batch")]
    bad = record("acme/no-such-project")  # the foreign key refuses it
    results = await asyncio.gather(
        writer.start(good[0], (), None),
        writer.start(bad, (), None),
        writer.start(good[1], (), None),
        return_exceptions=True,
    )
    assert isinstance(results[1], sa.exc.IntegrityError), results
    assert not isinstance(results[0], BaseException)
    assert not isinstance(results[2], BaseException)
    rows = await stored(imagegate, [r["id"] for r in [*good, bad]])
    assert set(rows) == {good[0]["id"], good[1]["id"]}


async def test_a_budget_refusal_in_a_batch_is_that_requests_alone(
    imagegate: Imagegate, users: Users, commits: list[str]
) -> None:
    await imagegate.accounts.ensure_project("acme/batch")
    await imagegate.budgets.set("project", "acme/batch", period="daily", limit_usd=0.25, hard=True)
    applying = await imagegate.budgets.applying("acme/batch")
    writer = imagegate.generation.writer
    records = [record("acme/batch") for _ in range(3)]
    commits.clear()
    results = await asyncio.gather(
        *(writer.start(r, applying, 0.1) for r in records), return_exceptions=True
    )
    assert len(commits) == 1
    assert [type(r).__name__ for r in results] == ["Reservation", "Reservation", "BudgetExceeded"]
    assert isinstance(results[2], BudgetExceeded)
    assert "daily hard budget of $0.25" in results[2].message
    rows = await stored(imagegate, [r["id"] for r in records])
    assert set(rows) == {records[0]["id"], records[1]["id"]}  # the refused one: no record
    async with imagegate.engine.connect() as conn:
        reserved = await conn.scalar(sa.select(budget_windows.c.reserved_usd))
    assert reserved == pytest.approx(0.2)


async def test_a_team_budget_refusal_releases_the_project_budget_held_before_it(
    imagegate: Imagegate, users: Users
) -> None:
    """Two budgets apply; the second refuses: what the first held in the same (shared)
    transaction is released, and the others' writes still commit."""
    await imagegate.accounts.ensure_project("acme/batch")
    await imagegate.budgets.set("project", "acme/batch", period="daily", limit_usd=5, hard=True)
    await imagegate.budgets.set("entity", "acme", period="daily", limit_usd=0.15, hard=True)
    applying = await imagegate.budgets.applying("acme/batch")
    assert len(applying) == 2
    writer = imagegate.generation.writer
    first, second = record("acme/batch"), record("acme/batch")
    results = await asyncio.gather(
        writer.start(first, applying, 0.1),
        writer.start(second, applying, 0.1),
        return_exceptions=True,
    )
    refused = [r for r in results if isinstance(r, BudgetExceeded)]
    assert len(refused) == 1 and "team 'acme'" in refused[0].message
    status = {s.budget.scope: s for s in await imagegate.budgets.status("acme/batch")}
    assert status["project"].reserved_usd == pytest.approx(0.1)  # not 0.2
    assert status["entity"].reserved_usd == pytest.approx(0.1)


async def test_the_cached_budget_lookup_stays_exact(imagegate: Imagegate, users: Users) -> None:
    """Which budgets apply is cached: the process that sets one sees it at once, another
    within the cache's ttl; a limit lowered elsewhere binds a reservation at once, and a
    budget deleted elsewhere holds nothing."""
    await imagegate.accounts.ensure_project("acme/cached")
    here = imagegate.budgets
    there = BudgetStore(imagegate.engine, cache_ttl=0.3)  # another replica's
    assert await here.applying("acme/cached") == ()
    assert await there.applying("acme/cached") == ()
    await here.set("project", "acme/cached", period="daily", limit_usd=1.0, hard=True)
    assert len(await here.applying("acme/cached")) == 1
    assert await there.applying("acme/cached") == ()  # cached, within its ttl
    await asyncio.sleep(0.35)
    assert len(await there.applying("acme/cached")) == 1
    # Lowered here; `there` still caches the $1 limit, and its reservation refuses anyway.
    await here.set("project", "acme/cached", period="daily", limit_usd=0.05, hard=True)
    with pytest.raises(BudgetExceeded, match=r"\$0.05"):
        await there.reserve("acme/cached", 0.1)
    held = await there.reserve("acme/cached", 0.05)
    assert held.held and held.held[0][2] == 0.05
    # Deleted here; `there` still caches it and holds nothing against it.
    assert await here.delete("project", "acme/cached")
    assert len(await there.applying("acme/cached")) == 1
    assert (await there.reserve("acme/cached", 0.1)).held == []


async def test_concurrent_generations_are_each_recorded(
    client: httpx.AsyncClient, users: Users, imagegate: Imagegate
) -> None:
    body = {"project_id": "acme/many", "inputs": {"model": "local/procedural", "prompt": "x"}}
    answers = await asyncio.gather(
        *(client.post("/image/create", json=body, headers=basic(users.alice)) for _ in range(12))
    )
    assert [a.status_code for a in answers] == [200] * 12
    ids = [a.json()["weave_call_id"] for a in answers]
    rows = await stored(imagegate, ids)
    assert len(rows) == 12 and all(row.ended_at is not None for row in rows.values())


async def test_a_batch_takes_budget_windows_in_one_order(
    imagegate: Imagegate, users: Users, backend: Backend
) -> None:
    """A batch whose requests' budgets come in another order than the global one locks
    them in that order first: while another transaction (another replica's) holds the
    first window, the batch holds nothing the other could then wait for (without the
    ordering it held the second one: a deadlock once the other asks for it)."""
    if backend.name != "postgres":
        pytest.skip("row locks: PostgreSQL (SQLite has one writer at a time)")
    for project in ("acme/first", "acme/second"):
        await imagegate.accounts.ensure_project(project)
        await imagegate.budgets.set("project", project, period="daily", limit_usd=5, hard=True)
        await imagegate.budgets.settle(await imagegate.budgets.reserve(project, 0.0), 0.0)
    first = await imagegate.budgets.applying("acme/first")
    second = await imagegate.budgets.applying("acme/second")
    assert first[0].id < second[0].id  # the global order: first, then second
    writer = imagegate.generation.writer
    async with imagegate.engine.connect() as other:
        await other.execute(sa.text("SET LOCAL lock_timeout = '300ms'"))
        lock = sa.select(budget_windows.c.budget_id).with_for_update()
        await other.execute(lock.where(budget_windows.c.budget_id == first[0].id))
        # One batch: the second project's request first, then the first's.
        batch = asyncio.gather(
            writer.start(record("acme/second"), second, 0.1),
            writer.start(record("acme/first"), first, 0.1),
        )
        await asyncio.sleep(0.3)  # the batch is waiting for the first window
        # Without the ordering the batch holds the second window here: lock timeout.
        await other.execute(lock.where(budget_windows.c.budget_id == second[0].id))
        await other.commit()
        results = await asyncio.wait_for(batch, 10)
    assert [len(r.held) for r in results] == [1, 1]
    status = {s.budget.target: s for s in await imagegate.budgets.status("acme/first")}
    assert status["acme/first"].reserved_usd == pytest.approx(0.1)
