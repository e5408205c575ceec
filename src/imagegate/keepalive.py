"""Answers that outlast proxies and clients with short read timeouts.

A generation can take minutes. A reverse proxy commonly closes a connection after 60 s
of silence, and the Weave client gives up after 30 s of it (`WEAVE_HTTP_TIMEOUT`), then
asks again. So while a generation runs, the connection is kept busy:

- streamed answers (server-sent events) get a `: keep-alive` comment line in each silent
  stretch (`imagegate.streaming` says when);
- a JSON answer may start early: when it is not ready within one interval, the 200 and
  its headers go out and one space follows each interval until the JSON (leading
  whitespace is valid JSON). Once the 200 is sent, a failure can only be told in the body,
  which on the Weave door is where failures already are (`response.error`). So
  `/image/create` does this by default for a client that announces its read timeout
  (`x-stainless-read-timeout`: the Weave client does) and for a caller that asks with
  `Imagegate-Keep-Alive: whitespace`; the OpenAI door, whose failures are HTTP statuses,
  only when asked. `Imagegate-Keep-Alive: off` turns it off.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from fastapi.responses import Response, StreamingResponse
from starlette.datastructures import Headers

log = logging.getLogger("imagegate.keepalive")

HEADER = "Imagegate-Keep-Alive"
READ_TIMEOUT_HEADER = "x-stainless-read-timeout"
HEARTBEAT = b": keep-alive\n\n"
WHITESPACE = b" "
MIN_INTERVAL = 0.05
# Tell nginx not to buffer what trickles through it (it honours this header).
NO_BUFFERING = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

T = TypeVar("T")

# Generations answered early keep running when their client goes away (they are paid
# for and must be recorded); the loop holds only weak references to tasks.
_running: set[asyncio.Task[object]] = set()


def interval_for(headers: Headers, default: float, *, unasked: bool) -> float | None:
    """Seconds between keep-alive bytes for this request's JSON answer, or None for a
    plain answer. `unasked`: on by default for clients that announce a read timeout."""
    asked = headers.get(HEADER, "").strip().lower()
    if asked in ("off", "none", "false", "0"):
        return None
    read_timeout = _seconds(headers.get(READ_TIMEOUT_HEADER))
    if asked != "whitespace" and not (unasked and read_timeout is not None):
        return None
    return stream_interval(headers, default)


def stream_interval(headers: Headers, default: float) -> float:
    """The keep-alive interval: the server's, shorter when the client says it gives up
    sooner (a third of its read timeout, so a late byte still arrives in time)."""
    interval = default
    read_timeout = _seconds(headers.get(READ_TIMEOUT_HEADER))
    if read_timeout is not None:
        interval = min(interval, read_timeout / 3)
    return max(interval, MIN_INTERVAL)


def _seconds(value: str | None) -> float | None:
    try:
        seconds = float(value) if value else None
    except ValueError:
        return None
    return seconds if seconds is not None and seconds > 0 else None


def keep(task: asyncio.Task[T]) -> asyncio.Task[T]:
    """Hold a task that must finish even if the request that started it goes away."""
    _running.add(task)  # type: ignore[arg-type]
    task.add_done_callback(_running.discard)
    return task


async def early_answer(
    work: Awaitable[T],
    *,
    interval: float | None,
    render: Callable[[T], Awaitable[Response]],
    failed: Callable[[Exception], bytes],
) -> Response:
    """`render(await work)`; when that takes longer than `interval`, a 200 that sends
    whitespace each interval and then the rendered body (or `failed(error)`)."""
    # The work runs in its own task either way: a client that goes away must not cancel
    # a generation the provider may already be making (and billing).
    task = keep(asyncio.ensure_future(work))
    if interval is None:
        return await render(await asyncio.shield(task))
    done, _ = await asyncio.wait({task}, timeout=interval)
    if done:
        return await render(task.result())  # in time: the ordinary answer, status and all

    async def body() -> AsyncIterator[bytes]:
        while not task.done():
            yield WHITESPACE
            await asyncio.wait({task}, timeout=interval)
        try:
            rendered = await render(task.result())
        except Exception as exc:
            log.warning("a generation answered early failed: %r", exc)
            yield failed(exc)
            return
        yield bytes(rendered.body)

    return StreamingResponse(body(), media_type="application/json", headers=NO_BUFFERING)
