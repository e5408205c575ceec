"""Engine creation and schema migrations (Alembic, applied at start-up)."""

from __future__ import annotations

import os
import zlib
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from imagegate.errors import DatabaseUnavailable

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def create_engine(url: str, *, timeout: float = 5.0, queue_timeout: float = 120.0) -> AsyncEngine:
    """An engine for `url`. On a server database `timeout` bounds connecting, so a
    database that is down gives a prompt 503, not a hang. A database that is up but
    busy (every pooled connection in use) makes requests wait their turn, up to
    `queue_timeout`: busy is not down. The number waiting is bounded by the HTTP
    server's cap on concurrent requests."""
    if url.startswith("sqlite"):
        db_path = url.split("///", 1)[-1]
        if db_path and db_path != ":memory:":
            _create_private(Path(db_path))
        engine = create_async_engine(
            url, connect_args={"timeout": 30}, pool_timeout=queue_timeout, hide_parameters=True
        )
        sa.event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    engine = create_async_engine(
        url,
        pool_size=10,
        max_overflow=20,
        pool_pre_ping=True,
        pool_timeout=queue_timeout,
        hide_parameters=True,
        connect_args={"timeout": timeout, **_pg_session_settings(url)},
    )
    sa.event.listen(engine.sync_engine, "do_connect", _connect_or_unavailable)
    return engine


def _create_private(path: Path) -> None:
    """Create the SQLite file (and its directory) private to this user, before SQLite
    would create it world-readable; its -wal and -shm files take the same mode."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))


def _pg_session_settings(url: str) -> dict[str, Any]:
    """Session settings for every PostgreSQL connection (asyncpg's server_settings).

    - jit off: the JIT compiler fired on the spend query and cost more than it saved;
      this service runs short OLTP reads, never the long scans JIT pays off on.
    - plan_cache_mode force_custom_plan: asyncpg prepares every statement, and after
      five runs PostgreSQL may switch to a generic plan that ignores the values (a status
      that is 3% of rows plans like one that is 97%; a LIKE pattern cannot use the
      trigram index). Planning these queries takes well under a millisecond.
    """
    if "+asyncpg" not in url:
        return {}
    return {"server_settings": {"jit": "off", "plan_cache_mode": "force_custom_plan"}}


def _connect_or_unavailable(dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
    # A refused or timed-out connect surfaces from the driver as a bare OSError, which
    # SQLAlchemy does not wrap: name it here, so only this failure maps to "database down".
    try:
        return dialect.connect(*cargs, **cparams)
    except (TimeoutError, OSError) as exc:
        raise DatabaseUnavailable(f"cannot connect to the database: {exc!r}") from exc


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets readers proceed while a generation is being recorded; NORMAL sync is
    # durable across process crashes (only an OS crash can lose the last commits).
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


async def migrate(engine: AsyncEngine, *, files: Any = None, revision: str = "head") -> None:
    """Bring the schema to `revision` (the newest by default). Data migrations that
    rewrite stored files read and write them through `files` (a FileStore)."""

    def upgrade(connection: sa.Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        config.attributes["files"] = files
        command.upgrade(config, revision)

    async with engine.begin() as conn:
        # Replicas starting at once queue here; each then finds the schema current.
        await advisory_lock(conn, "imagegate:migrate")
        await conn.run_sync(upgrade)


async def advisory_lock(conn: AsyncConnection, name: str) -> None:
    """On PostgreSQL, hold a lock named `name` until `conn`'s transaction ends.

    SQLite needs none: it is one machine's file, and its writers already serialise.
    """
    if conn.dialect.name == "postgresql":
        key = zlib.crc32(name.encode())
        await conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


async def ping(engine: AsyncEngine) -> None:
    """Raise unless the database answers a trivial query."""
    async with engine.connect() as conn:
        await conn.execute(sa.text("SELECT 1"))
