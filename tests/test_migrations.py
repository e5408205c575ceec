"""Upgrading a database that holds data, on SQLite and PostgreSQL.

Data is written as the oldest revision (0001) knew it: frozen table definitions below,
never the live models, so a later change to tables.py cannot change what "old data"
means. For every revision R, a database is made at 0001, filled, upgraded to R (as a
deployment that ran R would have it), and then opened by the current server, which
migrates it to head; the data must read back through the API. Revisions are listed from
the migration scripts themselves, so a new one is covered without editing this file.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy.dialects.postgresql import JSONB

from imagegate.app import create_app
from imagegate.config import Settings
from imagegate.core import open_file_store
from imagegate.digest import weave_digest
from imagegate.store.accounts import hash_key
from imagegate.store.db import alembic_config, create_engine
from tests.fake_openai import small_png

OLDEST = "0001"
SCRIPTS = ScriptDirectory.from_config(alembic_config())
REVISIONS = [script.revision for script in reversed(list(SCRIPTS.walk_revisions()))]

# --- the schema as revision 0001 created it (frozen) ---------------------------------
JSON = sa.JSON().with_variant(JSONB(), "postgresql")
TIME = sa.DateTime(timezone=True)
old = sa.MetaData()


def frozen(name: str, strings: str, times: str = "created_at", json_: str = "") -> sa.Table:
    """A table of 0001 with only the columns written here: names by type."""
    columns = [sa.Column(c, sa.String) for c in strings.split()]
    columns += [sa.Column(c, TIME) for c in times.split()]
    columns += [sa.Column(c, JSON) for c in json_.split()]
    return sa.Table(name, old, *columns)


users = frozen("users", "id name")
entities = frozen("entities", "id name")
memberships = frozen("memberships", "user_id entity_id")
projects = frozen("projects", "id entity_id name")
api_keys = frozen("api_keys", "id user_id key_hash prefix", "created_at revoked_at")
calls = frozen(
    "calls",
    "id project_id op_name display_name trace_id parent_id exception wb_user_id",
    "started_at ended_at deleted_at",
    "attributes inputs output summary",
)

KEY = "ig_" + "k" * 43  # an API key of 0001's format, stored by its hash
PROJECT = "olden/archive"
T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def old_call(call_id: str, prompt: str, image: bytes, metadata: bytes) -> dict[str, Any]:
    """A finished generation as the service of revision 0001 recorded it."""
    digest, meta = weave_digest(image), weave_digest(metadata)
    return {
        "id": call_id,
        "project_id": PROJECT,
        "op_name": "weave.image_generation_create",
        "trace_id": call_id.replace("c", "t"),
        "started_at": T0,
        "ended_at": T0 + timedelta(seconds=2),
        "attributes": {"imagegate": {"version": "0.1.0", "provider": "procedural"}},
        "inputs": {"model": "local/procedural", "prompt": prompt, "n": 1, "size": "64x64"},
        "output": {
            "created": int(T0.timestamp()),
            "data": [
                {
                    "image": {
                        "_type": "CustomWeaveType",
                        "weave_type": {"type": "weave.type_wrappers.Content.content.Content"},
                        "files": {"content": digest, "metadata.json": meta},
                    },
                    "content": {
                        "digest": digest,
                        "mimetype": "image/png",
                        "size": len(image),
                        "width": 64,
                        "height": 64,
                    },
                }
            ],
            "size": "64x64",
            "output_format": "png",
            "usage": {},
        },
        "summary": {
            "usage": {"local/procedural": {"requests": 1, "images": 1}},
            "costs": {
                "local/procedural": {
                    "requests": 1,
                    "images": 1,
                    "basis": "per_image",
                    "total_cost": 0.25,
                }
            },
            "images": 1,
            "attempts": [],
        },
        "wb_user_id": "u-olden",
    }


async def fill_as_oldest(conn: Any, settings: Settings) -> dict[str, bytes]:
    """Accounts, a project, two generations (one failed) and their files; returns the
    files by digest."""
    await conn.execute(users.insert().values(id="u-olden", name="olden", created_at=T0))
    await conn.execute(entities.insert().values(id="e-olden", name="olden", created_at=T0))
    await conn.execute(
        memberships.insert().values(user_id="u-olden", entity_id="e-olden", created_at=T0)
    )
    await conn.execute(
        projects.insert().values(id=PROJECT, entity_id="e-olden", name="archive", created_at=T0)
    )
    await conn.execute(
        api_keys.insert().values(
            id="k-olden", user_id="u-olden", key_hash=hash_key(KEY), prefix=KEY[:9], created_at=T0
        )
    )
    image, metadata = small_png(7), json.dumps({"mimetype": "image/png"}).encode()
    files = open_file_store(settings)
    stored = {await files.put(PROJECT, data): data for data in (image, metadata)}
    await conn.execute(calls.insert().values(old_call("c-done", "an old red fox", image, metadata)))
    failed = old_call("c-failed", "an old failure", image, metadata)
    failed.update(
        output=None,
        exception="provider_error: upstream is overloaded",
        summary={"attempts": [{"attempt": 1, "status_code": 503}]},
    )
    await conn.execute(calls.insert().values(failed))
    return stored


async def upgrade(engine: Any, revision: str, settings: Settings) -> None:
    def run(connection: sa.Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        # As imagegate runs them: 0004_weave_shape rewrites calls and reads their files.
        config.attributes["files"] = open_file_store(settings)
        command.upgrade(config, revision)

    async with engine.begin() as conn:
        await conn.run_sync(run)


def test_the_revisions_are_found() -> None:
    assert REVISIONS[0] == OLDEST and len(REVISIONS) >= 3, REVISIONS


@pytest.mark.parametrize("revision", REVISIONS)
async def test_data_from_the_oldest_revision_reads_back_after_upgrading(
    settings: Settings, revision: str
) -> None:
    engine = create_engine(settings.resolved_database_url)
    try:
        await upgrade(engine, OLDEST, settings)
        async with engine.begin() as conn:
            files = await fill_as_oldest(conn, settings)
        await upgrade(engine, revision, settings)  # where a deployment of `revision` left it
    finally:
        await engine.dispose()

    app = create_app(settings)  # the current server: migrates to head as it starts
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://t", auth=("api", KEY)
        ) as client:
            await check_reads(client, files)


async def check_reads(client: httpx.AsyncClient, files: dict[str, bytes]) -> None:
    # The old key still authenticates, and the old project is still its own.
    listed = await client.post("/calls/stream_query", json={"project_id": PROJECT})
    assert listed.status_code == 200, listed.text
    by_id = {c["id"]: c for c in map(json.loads, listed.text.splitlines())}
    assert set(by_id) == {"c-done", "c-failed"}, by_id

    done = await client.post("/call/read", json={"project_id": PROJECT, "id": "c-done"})
    call = done.json()["call"]
    assert call["inputs"]["prompt"] == "an old red fox"
    assert call["summary"]["weave"]["status"] == "success"
    assert call["started_at"].startswith("2026-06-01T12:00:00")
    # Wherever a migration puts an image reference, the output still names the image, and
    # every file it names reads back (0004_weave_shape writes Weave's own metadata.json
    # in place of 0001's); the old files themselves read back byte for byte.
    image_digest = weave_digest(small_png(7))
    assert image_digest in json.dumps(call["output"]), call["output"]
    for digest in referenced_files(call["output"]):
        res = await client.post("/file/content", json={"project_id": PROJECT, "digest": digest})
        assert res.status_code == 200, (digest, res.text)
    for digest, data in files.items():
        res = await client.post("/file/content", json={"project_id": PROJECT, "digest": digest})
        assert res.status_code == 200 and res.content == data

    failed = by_id["c-failed"]
    assert failed["exception"].startswith("provider_error") and failed["output"] is None
    assert failed["summary"]["weave"]["status"] == "error"

    spend = await client.get(f"/projects/{PROJECT}/spend")
    assert spend.status_code == 200 and spend.json()["total_cost"] == pytest.approx(0.25)

    # And the upgraded database takes new writes next to the old data.
    new = await client.post(
        "/image/create",
        json={
            "project_id": PROJECT,
            "inputs": {"model": "local/procedural", "prompt": "new", "size": "256x256"},
        },
    )
    assert new.status_code == 200 and "data" in new.json()["response"], new.text
    count = await client.post("/calls/query_stats", json={"project_id": PROJECT})
    assert count.json()["count"] == 3


def referenced_files(value: Any) -> set[str]:
    """The digests of every `files` map (Weave Content references) inside `value`."""
    if isinstance(value, dict):
        files = value.get("files")
        found = set(files.values()) if isinstance(files, dict) else set()
        return found.union(*(referenced_files(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(referenced_files(v) for v in value))
    return set()
