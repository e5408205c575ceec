"""A streamed generation, run apart from the request that asked for it.

The generation runs in a task of its own and hands each partial image to the stream as
soon as the provider has it. If the one reading the stream stops (a client that went
away), the task still runs to the end: a paid generation is always stored and recorded.
The OpenAI door and the web gallery's generate form both stream through here.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from imagegate.generation import GeneratedImage, Generation, KeptPartialSink

# The event loop keeps only weak references to tasks: running ones live here.
_running: set[asyncio.Task[None]] = set()


@dataclass(frozen=True)
class _Done:
    generation: Generation


@dataclass(frozen=True)
class _Failed:
    error: Exception


async def stream_generation(
    work: Callable[[KeptPartialSink], Awaitable[Generation]], heartbeat: float | None = None
) -> AsyncIterator[GeneratedImage | Generation | None]:
    """Each partial image as it comes (once kept), then the Generation; `work`'s errors are raised
    here, in order. `work(sink)` runs to its end whether or not this is read. With
    `heartbeat`, None comes after each `heartbeat` seconds without anything else (the
    stream sends a keep-alive then, so no proxy takes it for dead)."""
    queue: asyncio.Queue[GeneratedImage | _Done | _Failed] = asyncio.Queue()

    async def sink(partial: GeneratedImage) -> None:
        queue.put_nowait(partial)

    async def run() -> None:
        try:
            queue.put_nowait(_Done(await work(sink)))
        except Exception as exc:
            queue.put_nowait(_Failed(exc))

    task = asyncio.create_task(run())
    _running.add(task)
    task.add_done_callback(_running.discard)
    # One pending get at a time, never cancelled mid-wait, so no item is lost to a timeout.
    pending: asyncio.Task[GeneratedImage | _Done | _Failed] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(queue.get())
            done, _ = await asyncio.wait({pending}, timeout=heartbeat)
            if not done:
                yield None
                continue
            item, pending = pending.result(), None
            if isinstance(item, _Failed):
                raise item.error
            if isinstance(item, _Done):
                yield item.generation
                return
            yield item
    finally:
        if pending is not None:
            pending.cancel()
