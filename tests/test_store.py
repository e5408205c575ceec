"""The embedded store: migrations at start-up, WAL mode, atomic content-addressed files."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from imagegate.app import create_app
from imagegate.config import Settings
from imagegate.digest import weave_digest
from imagegate.store import LocalFileStore


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
    assert version == "0002"
    assert mode == "wal"
    assert {
        "users",
        "entities",
        "memberships",
        "projects",
        "api_keys",
        "calls",
        "provider_secrets",
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
