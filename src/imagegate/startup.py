"""What runs once when a server starts, before any request: migrations, the first admin
key, and crash recovery. With `imagegate serve --workers N` it runs in the supervising
process, once, before the workers start; the workers only serve.

Crash recovery on SQLite ends *every* unfinished call, which is right only when no other
server process is running calls on the same database file. `ServerLock` decides that
with two advisory file locks beside the database:
- `<db>.startup.lock`, held exclusively while a server prepares, so two servers starting
  at once on one file migrate and recover one after the other, never racing;
- `<db>.serving.lock`, held shared by every live server (the supervising process of
  `serve --workers N`, or an in-process app); a server that prepares while another holds
  it is not alone, and recovers only stale calls, as PostgreSQL replicas do.
PostgreSQL needs no file: its migrations take an advisory lock, and replicas only ever
recover stale calls.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from sqlalchemy.engine import make_url

from imagegate.recovery import Recovery

if TYPE_CHECKING:
    from imagegate.core import Imagegate


class ServerLock:
    def __init__(self, database: Path | None) -> None:
        """`database`: the SQLite file; None for a server database (no file locks)."""
        self.database = database
        self._serving: IO[bytes] | None = None

    @classmethod
    def for_url(cls, url: str) -> ServerLock:
        parsed = make_url(url)
        if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
            return cls(None)
        return cls(Path(parsed.database).resolve())

    def _open(self, suffix: str) -> IO[bytes]:
        assert self.database is not None
        path = self.database.with_name(self.database.name + suffix)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        return os.fdopen(os.open(path, os.O_CREAT | os.O_RDWR, 0o600), "r+b")

    @contextlib.contextmanager
    def preparing(self) -> Iterator[None]:
        """Held while this server migrates and recovers: others starting wait here."""
        if self.database is None:
            yield
            return
        with self._open(".startup.lock") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def claim(self) -> bool:
        """Mark this server as serving (until `release`); whether it is the only one.
        False on PostgreSQL: replicas may be anywhere."""
        if self.database is None:
            return False
        if self._serving is None:
            self._serving = self._open(".serving.lock")
        try:
            fcntl.flock(self._serving, fcntl.LOCK_EX | fcntl.LOCK_NB)
            alone = True
        except BlockingIOError:
            alone = False
        fcntl.flock(self._serving, fcntl.LOCK_SH)  # from now on, others are not alone
        return alone

    def release(self) -> None:
        if self._serving is not None:
            self._serving.close()  # closing drops the lock
            self._serving = None


@dataclass(frozen=True)
class Prepared:
    admin_key: str | None  # the first admin's new key, on a server that had no users
    interrupted: int  # calls crash recovery ended


async def prepare(imagegate: Imagegate, lock: ServerLock) -> Prepared:
    """Migrate, recover after a crash, and on a server with no users create `admin`.
    The caller holds `lock.preparing()`; `lock` stays claimed."""
    await imagegate.start()
    interrupted = await Recovery(imagegate).at_start(alone=lock.claim())
    return Prepared(await imagegate.bootstrap_admin(), interrupted)
