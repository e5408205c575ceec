"""The stores: migrations at start-up (SQLite with WAL; PostgreSQL from several replicas
at once), atomic content-addressed files on disk and in S3."""

from __future__ import annotations

import asyncio
import os
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory

from imagegate.app import create_app
from imagegate.config import Settings
from imagegate.core import open_file_store
from imagegate.digest import weave_digest
from imagegate.errors import StorageError
from imagegate.store import LocalFileStore
from imagegate.store.db import alembic_config, create_engine, migrate
from imagegate.store.objectstore import ObjectFileStore, ObjectStoreError
from tests.backends import PgCluster, S3Server

HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()


async def test_migrations_run_at_start_and_are_idempotent(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    for _ in range(2):  # a second start finds the schema current
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            engine = app.state.imagegate.engine
            async with engine.connect() as conn:
                version = await conn.scalar(sa.text("SELECT version_num FROM alembic_version"))
                mode = await conn.scalar(sa.text("PRAGMA journal_mode"))
                tables = set(await conn.run_sync(lambda c: sa.inspect(c).get_table_names()))
    assert version == HEAD
    assert mode == "wal"
    assert {
        "users",
        "entities",
        "memberships",
        "projects",
        "api_keys",
        "calls",
        "provider_secrets",
        "idempotency_keys",
        "audit_log",
        "budgets",
        "budget_windows",
        "rate_windows",
        "objects",
        "table_rows",
        "weave_tables",
        "feedback",
    } <= tables


async def test_file_store_is_atomic_deduplicated_and_scoped(tmp_path: Path) -> None:
    store = LocalFileStore(tmp_path / "files")
    data = b"\x89PNG fake bytes" * 1000
    digest = await store.put("acme/one", data)
    assert digest == weave_digest(data)
    assert await store.put("acme/one", data) == digest
    assert await store.get("acme/one", digest) == data
    assert await store.exists("acme/one", digest)
    # Another project does not see it, even by digest.
    assert await store.get("acme/two", digest) is None
    assert not await store.exists("acme/two", digest)
    files = [p for p in (tmp_path / "files").rglob("*") if p.is_file()]
    assert [p.name for p in files] == [digest]  # one copy, no temp files left behind


async def test_postgres_migrations_from_replicas_starting_at_once(pg_cluster: PgCluster) -> None:
    database = pg_cluster.create_database()
    engines = [create_engine(pg_cluster.url(database)) for _ in range(4)]
    try:
        # Without the advisory lock, all four would try to create the same tables.
        await asyncio.gather(*(migrate(engine) for engine in engines))
        async with engines[0].connect() as conn:
            version = await conn.scalar(sa.text("SELECT version_num FROM alembic_version"))
            rows = await conn.execute(
                sa.text(
                    "SELECT column_name, data_type FROM information_schema.columns "
                    "WHERE table_name = 'calls' AND column_name IN ('inputs', 'output', "
                    "'summary', 'attributes', 'started_at')"
                )
            )
            types = dict(rows.all())
    finally:
        for engine in engines:
            await engine.dispose()
        pg_cluster.drop_database(database)
    assert version == HEAD
    # JSONB, so the calls query API can index into JSON; timestamps carry their zone.
    assert types == {
        "inputs": "jsonb",
        "output": "jsonb",
        "summary": "jsonb",
        "attributes": "jsonb",
        "started_at": "timestamp with time zone",
    }


async def test_object_store_is_deduplicated_scoped_and_laid_out(s3_server: S3Server) -> None:
    store = ObjectFileStore.from_url(s3_server.files_url("layout"), os.environ)
    await store.ping()
    data = b"\x89PNG fake bytes" * 1000
    digest = await store.put("acme/one", data)
    assert digest == weave_digest(data)
    assert await store.put("acme/one", data) == digest
    assert await store.get("acme/one", digest) == data
    assert await store.exists("acme/one", digest)
    # Another project does not see it, even by digest.
    assert await store.get("acme/two", digest) is None
    assert not await store.exists("acme/two", digest)
    # `prefix/<entity>/<project>/<2 chars>/<digest>`, readable with any S3 client.
    listing = httpx.get(f"{s3_server.endpoint}/{s3_server.bucket}?list-type=2&prefix=layout/")
    assert f"<Key>layout/acme/one/{digest[:2]}/{digest}</Key>" in listing.text
    assert listing.text.count("<Key>") == 1


async def test_object_store_failures_are_storage_errors(s3_server: S3Server) -> None:
    """So a failed upload becomes a recorded `storage_error`, like a failed disk write."""
    store = ObjectFileStore.from_url(f"s3://no-such-bucket-{id(s3_server)}/x", os.environ)
    with pytest.raises(ObjectStoreError):
        await store.ping()
    with pytest.raises(StorageError):
        await store.put("acme/one", b"bytes")


def test_files_url_picks_the_backend(tmp_path: Path) -> None:
    data = Settings(data_dir=tmp_path / "data")
    assert open_file_store(data).root == tmp_path / "data" / "files"  # type: ignore[attr-defined]
    local = open_file_store(replace(data, files_url=f"file://{tmp_path}/elsewhere"))
    assert isinstance(local, LocalFileStore) and local.root == tmp_path / "elsewhere"
    assert isinstance(open_file_store(replace(data, files_url="s3://b/p")), ObjectFileStore)
    with pytest.raises(ValueError, match="IMAGEGATE_FILES_URL: unsupported files URL"):
        replace(data, files_url="ftp://host/x")  # refused by Settings, before any store
