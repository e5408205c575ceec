"""Engine creation and schema migrations (Alembic, applied at start-up)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import zlib
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool
from sqlalchemy.util import queue as sqla_queue

from imagegate.errors import DatabaseBusy, DatabaseUnavailable

if TYPE_CHECKING:
    from alembic.config import Config

T = TypeVar("T")
MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_REVISION = re.compile(r'^(down_revision|revision)\s*=\s*(?:"([^"]*)"|None)', re.MULTILINE)


class WaitingPool(AsyncAdaptedQueuePool):
    """The queue pool, with a bound of its own on how many may wait for a connection.

    Busy is not down: while every connection is in use, a checkout waits its turn (up
    to the pool timeout), and so does one whose new connection timed out while others
    are live. Only when `max_waiters` are already waiting is it refused at once, with
    DatabaseBusy (503 + Retry-After), so a flood cannot queue without end; and only
    when no connection can be made and none is live is the database down.
    """

    max_waiters = 2000

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.waiting = 0  # checkouts in this event loop's thread, so no lock needed

    def _do_get(self) -> Any:
        return self._do_get_or_wait()

    def _do_get_bounded(self) -> Any:
        if not (self._pool.empty() and self._overflow >= self._max_overflow):
            return super()._do_get()  # a connection is free, or one may be opened
        if self.waiting >= self.max_waiters:
            raise DatabaseBusy(
                f"{self.waiting} requests already wait for one of the "
                f"{self.size() + self._max_overflow} database connections"
            )
        self.waiting += 1
        try:
            return super()._do_get()
        finally:
            self.waiting -= 1

    def _do_get_or_wait(self) -> Any:
        try:
            return self._do_get_bounded()
        except DatabaseBusy:
            raise
        except DatabaseUnavailable:
            if self.checkedout() == 0:
                raise  # no live connection at all: the database is down
            # Others hold live connections: the database is up, only slow to accept one
            # more (a loaded machine). Wait for one of theirs rather than answer 503.
            self.waiting += 1
            try:
                return self._pool.get(True, self._timeout)
            except sqla_queue.Empty:
                raise DatabaseUnavailable("no database connection came free in time") from None
            finally:
                self.waiting -= 1

    def recreate(self) -> WaitingPool:
        pool = super().recreate()
        assert isinstance(pool, WaitingPool)
        pool.max_waiters = self.max_waiters
        return pool


def create_engine(
    url: str, *, timeout: float = 5.0, queue_timeout: float = 120.0, max_waiters: int = 2000
) -> AsyncEngine:
    """An engine for `url`. On a server database `timeout` bounds connecting, so a
    database that is down gives a prompt 503, not a hang. A database that is up but
    busy (every pooled connection in use) makes requests wait their turn, up to
    `queue_timeout`, in a queue of at most `max_waiters` (see WaitingPool)."""
    if url.startswith("sqlite"):
        db_path = url.split("///", 1)[-1]
        if db_path and db_path != ":memory:":
            _create_private(Path(db_path))
        engine = create_async_engine(
            url,
            connect_args={"timeout": 30},
            pool_timeout=queue_timeout,
            hide_parameters=True,
            # Reset below, only when a transaction is open (see _end_open_transaction).
            pool_reset_on_return=None,
            **({} if db_path == ":memory:" else {"poolclass": WaitingPool}),
        )
        sa.event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        sa.event.listen(engine.sync_engine, "reset", _end_open_transaction)
    else:
        engine = create_async_engine(
            url,
            poolclass=WaitingPool,
            pool_size=10,
            max_overflow=20,
            pool_pre_ping=True,
            pool_timeout=queue_timeout,
            hide_parameters=True,
            connect_args={"timeout": timeout, **_pg_session_settings(url)},
        )
        sa.event.listen(engine.sync_engine, "do_connect", _connect_or_unavailable)
    if isinstance(engine.sync_engine.pool, WaitingPool):
        engine.sync_engine.pool.max_waiters = max_waiters
    return engine


class SQLiteThread:
    """Whole transactions on a SQLite file, each run in one trip to a thread of its own.

    aiosqlite makes every cursor, statement, close and commit a trip to its thread and a
    wake-up of the event loop: ~0.3 ms of a small transaction's ~0.5. Here a synchronous
    function gets a plain sqlite3 connection to the same file (same pragmas) and runs
    there from begin to commit. One thread, so its transactions run one after another;
    its own, so they never queue behind the file store's fsyncs in the default executor.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        url = engine.url.set(drivername="sqlite")
        self.engine = sa.create_engine(
            url,
            connect_args={"timeout": 30, "check_same_thread": False},
            pool_size=1,  # one thread: one connection
            hide_parameters=True,
        )
        sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="sqlite-transactions")

    @staticmethod
    def for_engine(engine: AsyncEngine) -> SQLiteThread | None:
        """One for `engine` when it is SQLite (always a file: Settings refuses an
        in-memory database, which no second connection could see)."""
        return SQLiteThread(engine) if engine.dialect.name == "sqlite" else None

    async def begin(self, write: Callable[..., T], *args: Any) -> T:
        """`write(connection, *args)` in a transaction of its own, committed unless it
        raises."""

        def transaction() -> T:
            with self.engine.begin() as conn:
                return write(conn, *args)

        return await asyncio.get_running_loop().run_in_executor(self._thread, transaction)

    def close(self) -> None:
        self._thread.shutdown(wait=True)
        self.engine.dispose()


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


def _end_open_transaction(dbapi_conn: Any, _record: Any, reset: Any) -> None:
    # A connection goes back to the pool with no transaction open. The default reset
    # rolls back whenever the connection's own transaction was not ended, as after every
    # read (sqlite3 opens none for a SELECT): a trip to aiosqlite's thread for nothing.
    if reset.terminate_only or reset.transaction_was_reset or not reset.asyncio_safe:
        return
    if dbapi_conn.driver_connection.in_transaction:
        dbapi_conn.rollback()


def alembic_config() -> Config:
    from alembic.config import Config  # imported only when migrating: cold start

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


async def migrate(engine: AsyncEngine, *, files: Any = None, revision: str = "head") -> None:
    """Bring the schema to `revision` (the newest by default). Data migrations that
    rewrite stored files read and write them through `files` (a FileStore)."""

    if revision == "head" and await _at_head(engine):
        return  # the usual start: nothing to do, and no need to load alembic to see it

    def upgrade(connection: sa.Connection) -> None:
        from alembic import command

        config = alembic_config()
        config.attributes["connection"] = connection
        config.attributes["files"] = files
        command.upgrade(config, revision)

    async with engine.begin() as conn:
        # Replicas starting at once queue here; each then finds the schema current.
        await advisory_lock(conn, "imagegate:migrate")
        await conn.run_sync(upgrade)


def head_revisions() -> set[str]:
    """The revisions no other revision follows, read from the migration files' own
    `revision`/`down_revision` lines (a few files read; alembic takes ~100 ms to load)."""
    revisions, followed = set(), set()
    for path in (MIGRATIONS_DIR / "versions").glob("*.py"):
        values = dict((m[1], m[2]) for m in _REVISION.finditer(path.read_text()))
        if values.get("revision"):
            revisions.add(values["revision"])
        if values.get("down_revision"):
            followed.add(values["down_revision"])
    return revisions - followed


async def _at_head(engine: AsyncEngine) -> bool:
    """Whether the database is already at the one head revision (False when unsure:
    then alembic itself decides)."""
    heads = head_revisions()
    if len(heads) != 1:
        return False
    try:
        async with engine.connect() as conn:
            current = (await conn.execute(sa.text("SELECT version_num FROM alembic_version"))).all()
    except sa.exc.DBAPIError:  # no table yet: a new database
        return False
    return [row[0] for row in current] == list(heads)


@contextlib.asynccontextmanager
async def transaction(
    engine: AsyncEngine, conn: AsyncConnection | None = None
) -> AsyncIterator[AsyncConnection]:
    """`conn` (a transaction the caller runs, which several stores' writes then share),
    else a transaction of its own."""
    if conn is not None:
        yield conn
        return
    async with engine.begin() as own:
        yield own


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
