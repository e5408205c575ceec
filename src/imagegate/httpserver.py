"""The HTTP server: uvicorn with httptools, plus the limits uvicorn lacks.

uvicorn offers a keep-alive timeout and a cap on concurrent requests (answered 503), but
with httptools no limit on header size (a 96 MiB header is buffered whole), no timeout
for headers or bodies that trickle in (slowloris), none for a client that stops reading,
and no cap on open connections (file descriptors). `GuardedHttpTools` adds those to
uvicorn's own protocol; everything else (parsing, the ASGI cycle) is uvicorn's. The
alternatives weighed: hypercorn (pure-Python h11: has a read timeout, but is slower) and
granian (Rust: has most limits, but is a second server stack to run and deploy).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import os
import resource
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("imagegate.http")

STATUS_431 = b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
STATUS_408 = b"HTTP/1.1 408 Request Timeout\r\n"
PR_SET_PDEATHSIG = 1
M_ARENA_MAX = -8  # mallopt's parameter (glibc's malloc.h)
STARTUP_FAILED = 3  # a server whose app could not start exits with this (as uvicorn's)


@dataclass(frozen=True)
class HttpLimits:
    max_header_bytes: int = 64 * 1024  # request line and headers together
    header_timeout: float = 10.0  # from a request's first byte to its last header
    body_timeout: float = 30.0  # longest pause while a request body is being sent
    send_timeout: float = 60.0  # longest a client may leave an answer unread
    keep_alive_timeout: float = 5.0  # an idle connection between requests
    max_connections: int = 2048  # open connections; more are closed on accept


def connection_cap(wanted: int) -> int:
    """`wanted`, but never more than the file descriptors this process may open (less a
    reserve for the database, files and provider connections); raises the soft limit to
    the hard one first."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    reserve = 256
    return max(16, min(wanted, soft - reserve)) if soft != resource.RLIM_INFINITY else wanted


def protocol_class(limits: HttpLimits) -> type[GuardedHttpTools]:
    return type("ImagegateHttpProtocol", (GuardedHttpTools,), {"limits": limits})


class GuardedHttpTools(HttpToolsProtocol):
    limits = HttpLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._timer: asyncio.TimerHandle | None = None
        self._send_timer: asyncio.TimerHandle | None = None
        self._in_head = True  # reading a request line and headers
        self._head_bytes = 0
        self._tail = b""  # the last bytes seen, for a header end split across reads

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            log.warning("connection refused: %d open", len(self.connections) - 1)
            transport.abort()
            return
        self._arm(self.limits.header_timeout, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._send_timer is not None:
            self._send_timer.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            seen = self._tail + data
            end = seen.find(b"\r\n\r\n")
            size = self._head_bytes + (len(data) if end < 0 else end + 4 - len(self._tail))
            if size > self.limits.max_header_bytes:
                self._refuse(STATUS_431, "request headers are too large")
                return
            self._head_bytes += len(data)
            self._tail = seen[-3:]
        elif self._timer is not None:  # a body is arriving: it made progress
            self._arm(self.limits.body_timeout, self._body_timed_out)
        super().data_received(data)

    # httptools' callbacks mark where a request is.
    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self._in_head:  # the next request on a kept-alive connection
            self._in_head, self._head_bytes, self._tail = True, 0, b""
            self._arm(self.limits.header_timeout, self._head_timed_out)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._arm(self.limits.body_timeout, self._body_timed_out)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # uvicorn arms its keep-alive timer here; ours covers the next request's head
        # once its first byte arrives (on_message_begin).

    def pause_writing(self) -> None:
        super().pause_writing()
        self._send_timer = self.loop.call_later(self.limits.send_timeout, self._send_timed_out)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None

    def _arm(self, delay: float, callback: Any) -> None:
        self._disarm()
        self._timer = self.loop.call_later(delay, callback)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _head_timed_out(self) -> None:
        self._timer = None
        if self._in_head and not self.transport.is_closing():
            if self._head_bytes:
                self._refuse(STATUS_408, "request headers took too long")
            else:
                self.transport.close()  # an idle connection that never sent a request

    def _body_timed_out(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        if self.flow.read_paused:  # we stopped reading (the app is busy), not the client
            self._arm(self.limits.body_timeout, self._body_timed_out)
            return
        if self.cycle is not None and not self.cycle.response_started:
            self._refuse(STATUS_408, "request body took too long")
        else:
            self.transport.close()

    def _send_timed_out(self) -> None:
        # Also when closing: a graceful close (keep-alive's) would wait for the unread
        # answer to drain, which is what never happens.
        self._send_timer = None
        log.info("dropping a connection whose client stopped reading")
        self.transport.abort()

    def _refuse(self, status: bytes, message: str) -> None:
        body = message.encode()
        self.transport.write(
            status
            + b"content-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
            + b"content-length: %d\r\n\r\n" % len(body)
            + body
        )
        self.transport.close()


def capped(limits: HttpLimits) -> HttpLimits:
    """`limits` with the connection cap clamped to what this process may open."""
    return HttpLimits(
        **{**limits.__dict__, "max_connections": connection_cap(limits.max_connections)}
    )


def serve(
    app: Callable[[], Any], *, host: str, port: int, limits: HttpLimits, workers: int = 1
) -> None:
    """Serve the app `app()` builds: in this process, or in `workers` forked processes
    sharing one listening socket. Forking after the imports (rather than uvicorn's own
    spawned workers, which import everything again) lets each worker start at once and
    share the imported code's memory. A worker that dies is replaced; SIGTERM or SIGINT
    stops them all gracefully."""
    import uvicorn

    _few_malloc_arenas()
    config = uvicorn.Config(
        app,
        factory=True,
        host=host,
        port=port,
        http=protocol_class(capped(limits)),
        timeout_keep_alive=max(1, round(limits.keep_alive_timeout)),
        log_level="info",
        timeout_graceful_shutdown=10,
    )
    if workers <= 1:
        server = uvicorn.Server(config)
        server.run()
        if not server.started:
            sys.exit(STARTUP_FAILED)
        return
    sockets = listening_sockets(config, workers)
    parent = os.getpid()
    children: dict[int, int] = {}  # pid: its slot, the socket it serves
    stopping = False
    exit_code = 0

    def start_worker(slot: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker: uvicorn installs its own signal handlers
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            _die_with_parent(parent)
            server = uvicorn.Server(config)
            try:
                server.run(sockets=[sockets[slot % len(sockets)]])
            finally:
                os._exit(0 if server.started else STARTUP_FAILED)
        children[pid] = slot

    def stop(_signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    # The workers share the supervisor's objects until they write to them. The cyclic
    # collector writes to every object it examines, so it would copy them all into each
    # worker: frozen, they are never examined. (No collection first: it would take tens
    # of milliseconds of the start-up, to free little.)
    gc.freeze()
    for slot in range(workers):
        start_worker(slot)
    while children:
        pid, status = os.wait()
        slot = children.pop(pid, None)
        if slot is None:
            continue
        if os.waitstatus_to_exitcode(status) == STARTUP_FAILED and not stopping:
            log.error("worker %d could not start; stopping", pid)
            stop(signal.SIGTERM, None)
            exit_code = STARTUP_FAILED
        elif not stopping:
            log.error("worker %d ended (status %d); starting another", pid, status)
            time.sleep(0.5)  # a worker that cannot start must not spin
            start_worker(slot)  # on the same socket, where connections wait for it
    for sock in sockets:
        sock.close()
    if exit_code:
        sys.exit(exit_code)


def listening_sockets(config: Any, workers: int) -> list[socket.socket]:
    """The workers' listening sockets: on Linux one per worker, all bound to the port
    with SO_REUSEPORT, so the kernel spreads new connections evenly among them. With one
    shared socket, whichever worker woke first accepted every connection waiting (asyncio
    accepts up to the backlog at once): a burst of 64 kept-alive connections split about
    60/40 between two workers, and the busier one set the tail. The supervisor holds them
    all, so a dead worker's connections wait in its socket for its replacement. (A
    process must run as the same user to join the group: no one else can take a share.)"""
    if sys.platform != "linux" or not config.host or config.uds or config.fd is not None:
        sock = config.bind_socket()
        return [sock]
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    port, sockets = config.port, []
    try:
        for _ in range(workers):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((config.host, port))
            port = sock.getsockname()[1]  # with port 0, the others join the first
            sock.listen(config.backlog)  # connections queue before the worker starts
            sock.set_inheritable(True)
            sockets.append(sock)
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", config.host, port, exc)
        sys.exit(STARTUP_FAILED)
    log.info("listening on %s:%d (%d sockets, SO_REUSEPORT)", config.host, port, workers)
    return sockets


def _few_malloc_arenas() -> None:
    """glibc gives each thread that allocates an arena of its own (up to 8 per core), and
    a server runs dozens of threads (SQLite connections, file writes): freed memory
    scattered over many arenas is seldom reused or returned. Two arenas, as
    MALLOC_ARENA_MAX=2 would, unless the environment already says."""
    from imagegate.config import malloc_arenas_set  # config imports this module

    if sys.platform == "linux" and not malloc_arenas_set():
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).mallopt(M_ARENA_MAX, 2)


def _die_with_parent(parent: int) -> None:
    """Have the kernel kill this worker when the supervising process dies (Linux), so a
    killed server leaves no worker behind holding its socket and database."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it died before the line above
        os._exit(1)
