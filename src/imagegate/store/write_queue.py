"""Bulk writers on one SQLite database take turns, and each is woken the moment the
one before it commits.

SQLite has one writer at a time. A writer that finds the database locked waits in
SQLite's busy handler, which sleeps between tries (1, 2, 5 ... up to 100 ms), so with
batches arriving from several requests and worker processes the database sat idle
between one batch's commit and the next one's wake-up. Batch writes queue here instead:
in this process behind an asyncio lock, across processes on an exclusive flock of a
file beside the database, taken in a thread, which the kernel hands on at once.

This orders writers only: SQLite's own locking still keeps every write correct, for
writers that do not queue here too. The writers that queue: the batch API's inserts and
ends (store/call_writes.py) and the generations' group commits (store/group_commit.py),
one queue per engine, so in one process they queue together.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import weakref
from collections.abc import AsyncIterator
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncEngine


class SQLiteWriteQueue:
    def __init__(self, database: str | None) -> None:
        in_memory = not database or database == ":memory:"
        self.path = None if in_memory else Path(f"{database}-writers")
        self._lock = asyncio.Lock()
        self._fd: int | None = None
        self._pid = 0  # the process that opened _fd: a forked worker opens its own

    def _file(self) -> int | None:
        if self.path is None:
            return None
        if self._fd is None or self._pid != os.getpid():
            # A descriptor inherited across fork shares its lock with the parent's.
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            self._pid = os.getpid()
        return self._fd

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        async with self._lock:
            fd = self._file()
            if fd is None:
                yield
                return
            try:  # free (the usual case): taken at once, no trip to a thread
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                await _wait_for_lock(fd)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)


async def _wait_for_lock(fd: int) -> None:
    """The lock, once another process's writer lets go: waited for in a thread."""
    taking = asyncio.get_running_loop().run_in_executor(None, fcntl.flock, fd, fcntl.LOCK_EX)
    try:
        await asyncio.shield(taking)
    except asyncio.CancelledError:
        # The thread takes the lock all the same: give it back when it has.
        taking.add_done_callback(lambda f: _release_if_taken(f, fd))
        raise


def _release_if_taken(taking: asyncio.Future[None], fd: int) -> None:
    if not taking.cancelled() and taking.exception() is None:
        fcntl.flock(fd, fcntl.LOCK_UN)


_queues: weakref.WeakKeyDictionary[Engine, SQLiteWriteQueue] = weakref.WeakKeyDictionary()


def writer_turn(engine: AsyncEngine) -> contextlib.AbstractAsyncContextManager[None]:
    """A write's turn at `engine`'s database: on SQLite, queued with the engine's other
    writers (one queue per engine); elsewhere at once (PostgreSQL locks rows)."""
    if engine.dialect.name != "sqlite":
        return contextlib.nullcontext()
    queue = _queues.get(engine.sync_engine)
    if queue is None:
        queue = _queues[engine.sync_engine] = SQLiteWriteQueue(engine.url.database)
    return queue.turn()
