"""Hourly rollups (migration 0010): kept right by every kind of write, and read back as
exactly what summing the calls themselves gives, for windows on and off hour marks."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from imagegate.config import Settings
from imagegate.store.db import create_engine, migrate
from imagegate.store.spend import _figures, _from_calls, call_counts, project_spend
from imagegate.store.tables import call_rollups, calls, entities, projects

pytestmark = pytest.mark.asyncio

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
PROJECTS = ("acme/zoo", "acme/farm")
MODELS = ("gpt-image-1", "dall-e-3", "local/procedural")


def _call(rng: random.Random, i: int) -> dict[str, Any]:
    started = T0 + timedelta(minutes=rng.randrange(0, 60 * 30), seconds=rng.randrange(60))
    model = rng.choice(MODELS)
    cost: Any = round(rng.random(), 4) if model != "local/procedural" else None  # unpriced
    return {
        "id": f"c{i:04}",
        "project_id": rng.choice(PROJECTS),
        "op_name": "imagegate.image.create",
        "trace_id": f"c{i:04}",
        "started_at": started,
        "ended_at": started + timedelta(seconds=5),
        "attributes": {},
        "inputs": {"model": model},
        "summary": {"costs": {model: {"images": 1, "total_cost": cost}}},
        "exception": "provider_error: boom" if rng.random() < 0.1 else None,
    }


@pytest_asyncio.fixture
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(settings.resolved_database_url)
    await migrate(engine)
    async with engine.begin() as conn:
        await conn.execute(entities.insert().values(id="e1", name="acme", created_at=T0))
        await conn.execute(
            projects.insert(),
            [{"id": p, "entity_id": "e1", "name": p[5:], "created_at": T0} for p in PROJECTS],
        )
    yield engine
    await engine.dispose()


async def _same_as_calls(engine: AsyncEngine, since: Any, until: Any) -> None:
    async with engine.connect() as conn:
        rolled = await _figures(conn, PROJECTS, since, until)
        summed = await _from_calls(conn, PROJECTS, since, until)
    assert _flat(rolled) == pytest.approx(_flat(summed)), (since, until)


def _flat(figures: dict[str, dict[str, dict[str, Any]]]) -> dict[str, float]:
    """{"project model key": value}, leaving out models with no calls in the window."""
    return {
        f"{project} {model} {key}": value
        for project, models in figures.items()
        for model, values in models.items()
        if values["calls"]
        for key, value in values.items()
    }


async def test_rollups_follow_every_write(engine: AsyncEngine) -> None:
    rng = random.Random(15)
    made = [_call(rng, i) for i in range(300)]
    async with engine.begin() as conn:
        await conn.execute(calls.insert(), made[:200])  # one statement, many rows
        for call in made[200:]:  # one statement each, some still running
            running = call["id"].endswith("7")
            row = call | {"ended_at": None, "summary": None} if running else call
            await conn.execute(calls.insert().values(**row))
    async with engine.begin() as conn:
        # finish the running ones; delete some; bring one back; move one; rename some;
        # and remove one row outright.
        for call in made[200:]:
            if call["id"].endswith("7"):
                await conn.execute(
                    calls.update()
                    .where(calls.c.id == call["id"])
                    .values(ended_at=call["ended_at"], summary=call["summary"])
                )
        gone = [c["id"] for c in made if c["id"].endswith(("3", "5"))]
        await conn.execute(
            calls.update().where(calls.c.id.in_(gone)).values(deleted_at=T0 + timedelta(days=9))
        )
        await conn.execute(calls.update().where(calls.c.id == "c0013").values(deleted_at=None))
        await conn.execute(
            calls.update().where(calls.c.id == "c0020").values(started_at=T0 - timedelta(days=3))
        )
        await conn.execute(calls.update().where(calls.c.id < "c0050").values(display_name="x"))
        await conn.execute(calls.delete().where(calls.c.id == "c0021"))
    windows = [
        (None, None),
        (T0, T0 + timedelta(hours=5)),  # whole hours
        (T0 + timedelta(minutes=17), T0 + timedelta(hours=20, minutes=3)),  # partial ends
        (T0 + timedelta(minutes=5), T0 + timedelta(minutes=50)),  # inside one hour
        (T0 + timedelta(hours=3, seconds=1), None),
        (None, T0 + timedelta(hours=7, minutes=30)),
    ]
    for since, until in windows:
        await _same_as_calls(engine, since, until)
    async with engine.connect() as conn:
        live = await conn.scalar(
            sa.select(sa.func.count()).where(
                calls.c.project_id == "acme/zoo", calls.c.deleted_at.is_(None)
            )
        )
        assert (await call_counts(conn, ["acme/zoo"]))["acme/zoo"][0] == live
        spend = await project_spend(conn, "acme/zoo")
        assert spend["calls"] == live
        assert spend["unpriced_calls"] == spend["by_model"]["local/procedural"]["calls"] > 0
        # Reads folded the deltas: now one row per key.
        keys = sa.select(
            call_rollups.c.project_id, call_rollups.c.hour, call_rollups.c.model
        ).distinct()
        distinct = await conn.scalar(sa.select(sa.func.count()).select_from(keys.subquery()))
        rows = await conn.scalar(sa.select(sa.func.count()).select_from(call_rollups))
        assert rows == distinct
