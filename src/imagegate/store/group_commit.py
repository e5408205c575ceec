"""Group commit of generations' call records: one writer task per process.

Each generation writes twice: its start (the call row, with its budget reservation) and
its end (the call's outcome, with the budget settled). Alone, each is a transaction of
its own: a pool checkout, a few statements and a commit, every one a trip through the
driver (on SQLite, aiosqlite's thread). Under load those trips are most of a small
generation's cost. Here requests hand their writes to one task, which writes whatever
has queued meanwhile in one transaction: the starts as one multi-row insert, the ends
as one executemany, the settlements as another. On a SQLite file the whole transaction
is one trip to a thread (store/db.py's SQLiteThread), not one per statement.

Each request still awaits its own commit before it goes on (nothing it was told is
recorded is lost). A budget refusal is that request's alone: its reservation is
released inside the transaction and the others commit. Any other failure rolls the
batch back and its writes are retried one transaction each, so an error reaches the
request it belongs to, and only that one.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from imagegate.errors import BudgetExceeded
from imagegate.store.budgets import (
    SETTLE,
    Budget,
    Reservation,
    lock_windows,
    reserve_in,
    settlements,
    window_start,
)
from imagegate.store.calls import FINISH, START, finish_params
from imagegate.store.db import SQLiteThread
from imagegate.store.write_queue import writer_turn

MAX_BATCH = 128  # writes per transaction: bounds how long one batch holds the lock


@dataclass
class _Start:
    record: Mapping[str, Any]
    budgets: tuple[Budget, ...]
    amount: float | None
    done: asyncio.Future[Reservation] = field(repr=False)


@dataclass
class _Finish:
    params: dict[str, Any]
    held: list[tuple[str, datetime, float]]
    cost: float
    done: asyncio.Future[None] = field(repr=False)


@dataclass
class _Settle:
    """A reservation released by a request that went away after its start committed."""

    held: list[tuple[str, datetime, float]]
    cost: float
    done: asyncio.Future[None] = field(repr=False)


_Write = _Start | _Finish | _Settle


class GenerationRecorder:
    def __init__(self, engine: AsyncEngine, *, max_batch: int = MAX_BATCH) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self._queue: asyncio.Queue[_Write] | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sqlite: SQLiteThread | None = None
        self._sqlite_pid = 0  # the process that made _sqlite: a forked worker makes its own

    async def start(
        self, record: Mapping[str, Any], budgets: tuple[Budget, ...], amount: float | None
    ) -> Reservation:
        """Record a call as started, holding `amount` against `budgets` in the same
        transaction; what it holds, or BudgetExceeded (nothing recorded or held)."""
        op = _Start(record, budgets, amount, self._future())
        self._submit(op)
        try:
            return await asyncio.shield(op.done)
        except asyncio.CancelledError:
            # The write goes on without us: whatever it holds once committed is released
            # at its estimate (as a generation that died on the way is).
            op.done.add_done_callback(self._release_abandoned)
            raise

    async def finish(
        self,
        call_id: str,
        *,
        ended_at: datetime,
        output: Any,
        summary: Mapping[str, Any],
        exception: str | None,
        held: list[tuple[str, datetime, float]],
        cost: float,
    ) -> None:
        """Record the call's end and settle what it held at `cost`, in one transaction."""
        params = finish_params(call_id, ended_at, output, summary, exception)
        op = _Finish(params, list(held), cost, self._future())
        self._submit(op)
        await asyncio.shield(op.done)

    async def close(self) -> None:
        """Write what is queued, then stop the writer."""
        if self._task is not None and self._queue is not None:
            if self._loop is asyncio.get_running_loop() and not self._task.done():
                await self._queue.join()
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            self._task = self._queue = self._loop = None
        if self._sqlite is not None:
            sqlite, self._sqlite = self._sqlite, None
            await asyncio.to_thread(sqlite.close)

    def _future(self) -> asyncio.Future[Any]:
        return asyncio.get_running_loop().create_future()

    def _submit(self, op: _Write) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._task is None or self._task.done():
            self._loop, self._queue = loop, asyncio.Queue()
            # A context of its own: not that of the request that happened to start it.
            self._task = loop.create_task(
                self._run(self._queue), name="call-writer", context=contextvars.Context()
            )
        assert self._queue is not None
        self._queue.put_nowait(op)

    def _release_abandoned(self, done: asyncio.Future[Reservation]) -> None:
        if done.cancelled() or done.exception() is not None or not done.result().held:
            return
        held = done.result().held
        op = _Settle(held, held[0][2], self._future())  # assume the estimate was paid
        op.done.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._submit(op)

    async def _run(self, queue: asyncio.Queue[_Write]) -> None:
        while True:
            batch = [await queue.get()]
            while len(batch) < self.max_batch and not queue.empty():
                batch.append(queue.get_nowait())
            try:
                await self._write_batch(batch)
            finally:
                for op in batch:
                    if not op.done.done():  # cancelled mid-write (shutdown)
                        op.done.set_exception(RuntimeError("the call writer stopped"))
                    queue.task_done()

    async def _transaction(self, batch: list[_Write]) -> list[Any]:
        """Write `batch` in one transaction, in its turn at the database."""
        async with writer_turn(self.engine):
            sqlite = self._sqlite_thread()
            if sqlite is not None:
                return await sqlite.begin(_write, batch)
            async with self.engine.begin() as conn:
                return await conn.run_sync(_write, batch)

    def _sqlite_thread(self) -> SQLiteThread | None:
        if self._sqlite is None or self._sqlite_pid != os.getpid():
            self._sqlite, self._sqlite_pid = SQLiteThread.for_engine(self.engine), os.getpid()
        return self._sqlite

    async def _write_batch(self, batch: list[_Write]) -> None:
        try:
            outcomes = await self._transaction(batch)
        except Exception as exc:
            if len(batch) == 1:
                _fail(batch[0], exc)
                return
            # Which write failed is unknown: each alone, so its error is its own.
            for op in batch:
                try:
                    (outcome,) = await self._transaction([op])
                except Exception as exc:
                    _fail(op, exc)
                else:
                    _resolve(op, outcome)
            return
        for op, outcome in zip(batch, outcomes, strict=True):
            _resolve(op, outcome)


def _write(conn: sa.Connection, batch: list[_Write]) -> list[Any]:
    """Write `batch` in `conn`'s transaction: each write's outcome (a Reservation, a
    BudgetExceeded, or None). Synchronous: on SQLite it runs in a thread, elsewhere
    through `AsyncConnection.run_sync`."""
    outcomes: list[Any] = []
    records = []
    ends = []
    settled: list[dict[str, Any]] = []
    now = datetime.now(UTC)
    _lock_in_one_order(conn, batch, now)
    for op in batch:
        if isinstance(op, _Start):
            reservation = Reservation()
            if op.amount is not None and op.budgets:
                try:
                    reservation = reserve_in(conn, op.budgets, op.amount, now=now)
                except BudgetExceeded as exc:
                    outcomes.append(exc)
                    continue
            records.append(op.record)
            outcomes.append(reservation)
        elif isinstance(op, _Finish):
            ends.append(op.params)
            settled += settlements(op.held, op.cost)
            outcomes.append(None)
        else:
            settled += settlements(op.held, op.cost)
            outcomes.append(None)
    if records:
        conn.execute(START, records)
    if ends:
        conn.execute(FINISH, ends)
    if settled:
        conn.execute(SETTLE, settled)
    return outcomes


def _lock_in_one_order(conn: sa.Connection, batch: list[_Write], now: datetime) -> None:
    """One request takes its budgets' windows in id order, but a batch of several takes
    them request by request, then the settlements': two replicas' batches could each
    hold a window the other waits for (PostgreSQL would end one after a second's
    deadlock check). Unless the batch's own order is already the global one, its windows
    are locked in that order first. SQLite has one writer at a time: nothing to order."""
    if conn.dialect.name != "postgresql":
        return
    touched: list[tuple[str, datetime]] = []
    for op in batch:
        if isinstance(op, _Start) and op.amount is not None:
            touched += [(b.id, window_start(b.period, now)) for b in op.budgets]
    for op in batch:
        if not isinstance(op, _Start):
            touched += [(budget_id, start) for budget_id, start, _ in op.held]
    in_order = list(dict.fromkeys(touched))
    if in_order != sorted(in_order):
        lock_windows(conn, in_order)


def _resolve(op: _Write, outcome: Any) -> None:
    if op.done.done():
        return
    if isinstance(outcome, BaseException):
        _fail(op, outcome)
    else:
        op.done.set_result(outcome)


def _fail(op: _Write, exc: BaseException) -> None:
    if not op.done.done():
        op.done.set_exception(exc)
