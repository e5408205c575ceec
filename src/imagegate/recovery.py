"""After a crash: calls left unfinished read back as failed, and half-written files go.

The service records a call's start before paying the provider and its end after storing
the images, so a process killed in between leaves a call with no end (`running`) and
perhaps a temp file in the local file store. Recovery ends such calls as failed with a
clear exception, and removes the temp files (readers never see them: they only open
complete files under their final names).

Which calls are orphans depends on who else may be running them:
- SQLite: one server process owns the database, so at start-up every unfinished call is
  an orphan of a previous process.
- PostgreSQL: replicas share the database, and a starting replica must not fail the
  calls its live siblings are running. Only calls unfinished for longer than any
  generation can take (`IMAGEGATE_STALE_CALL_AFTER`, 65 minutes by default) are orphans.
In both cases a background task repeats the stale sweep (every
`IMAGEGATE_RECOVERY_INTERVAL` seconds), catching calls whose task died without a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from imagegate.config import Settings
    from imagegate.core import Imagegate

log = logging.getLogger("imagegate.recovery")

INTERRUPTED = "interrupted: the server stopped before this generation finished"
INTERRUPTED_SUMMARY = {"images": 0, "error": {"type": "interrupted", "status_code": None}}


@dataclass(frozen=True)
class RecoveryPolicy:
    # A call unfinished for this long (seconds) is taken as orphaned on any backend. It
    # must exceed the longest generation (timeout_s x max_attempts plus retry waits): in
    # the packaged catalog, 1200 s (2.5's xhigh/max) x 3 attempts and two waits of 30 s.
    stale_after_s: float = 65 * 60.0
    # How often (seconds) the stale sweep runs while the server is up; 0 turns it off.
    interval_s: float = 60.0

    @classmethod
    def from_settings(cls, settings: Settings) -> RecoveryPolicy:
        return cls(stale_after_s=settings.stale_call_after, interval_s=settings.recovery_interval)


class Recovery:
    """The start-up sweep and its periodic repeat, for one app's lifespan."""

    def __init__(self, imagegate: Imagegate, policy: RecoveryPolicy | None = None) -> None:
        self.imagegate = imagegate
        self.policy = policy or RecoveryPolicy.from_settings(imagegate.settings)
        self._task: asyncio.Task[None] | None = None

    @property
    def single_process(self) -> bool:
        """Whether this process alone writes the database (SQLite), so nothing else can
        be running the calls it finds unfinished at start-up."""
        return self.imagegate.engine.dialect.name == "sqlite"

    async def start(self) -> None:
        """Sweep once before serving, then keep sweeping in the background."""
        stale = None if self.single_process else self.policy.stale_after_s
        await self.sweep(stale)
        # Only at start-up: temp files leak only when a process dies, and walking a large
        # store every few minutes would cost more than the leftovers do.
        if remove := getattr(self.imagegate.files, "remove_temp_files", None):
            removed = await remove(stale)
            if removed:
                log.warning("removed %d partly written temp file(s)", removed)
        if self.policy.interval_s > 0:
            self._task = asyncio.create_task(self._repeat(), name="imagegate-recovery")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def sweep(self, stale_after_s: float | None) -> int:
        """End unfinished calls (all of them, or those older than `stale_after_s`) as
        interrupted; how many."""
        now = datetime.now(UTC)
        started_before = None if stale_after_s is None else now - timedelta(seconds=stale_after_s)
        ended = await self.imagegate.calls.fail_unfinished(
            started_before, ended_at=now, exception=INTERRUPTED, summary=INTERRUPTED_SUMMARY
        )
        if ended:
            log.warning("marked %d unfinished call(s) as interrupted", ended)
            self.imagegate.metrics.interrupted(ended)
        return ended

    async def _repeat(self) -> None:
        while True:
            await asyncio.sleep(self.policy.interval_s)
            try:
                await self.sweep(self.policy.stale_after_s)
            except Exception:  # a database blip must not end the loop
                log.exception("recovery sweep failed; retrying in %ss", self.policy.interval_s)
