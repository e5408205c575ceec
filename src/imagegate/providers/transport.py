"""The provider SDK's connections, with back-pressure on what they receive.

The SDK's HTTP stack (httpx2 over httpcore2 over anyio) queues everything the socket
delivers, however slowly it is read: with a thousand answers of a few MB arriving at
once, every answer sits whole in memory before the first is decoded. Here connections
are asyncio streams instead, whose reader stops reading the socket past a small buffer
(the kernel's window then holds the rest back): memory per answer in flight stays a
few hundred KB, whatever the image's size.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Iterable
from typing import Any

import httpcore2
import httpx2
import openai
from httpcore2 import (
    ConnectError,
    ConnectTimeout,
    ReadError,
    ReadTimeout,
    WriteError,
    WriteTimeout,
)

# StreamReader stops reading the socket when this much (x2) is waiting to be read.
# 64 KB, measured against 128 KB (bench/inflight.py, 1,000 answers of 1.9 MB in flight):
# peak RSS 510-522 vs 629-662 MiB; 3840x2160 at c=64 within the runs' noise (12.7-14.0
# vs 13.9-16.6 req/s, both above the floor's 11-12).
READ_BUFFER = 64 * 1024


class _Stream(httpcore2.AsyncNetworkStream):
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            async with asyncio.timeout(timeout):
                return await self._reader.read(max_bytes)
        except TimeoutError as exc:
            raise ReadTimeout(str(exc)) from exc
        except BrokenPipeError as exc:
            # Our request's bytes were refused: the server cannot have read it whole.
            raise WriteError(str(exc)) from exc
        except OSError as exc:
            raise ReadError(str(exc)) from exc

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        try:
            async with asyncio.timeout(timeout):
                self._writer.write(buffer)
                await self._writer.drain()
        except TimeoutError as exc:
            raise WriteTimeout(str(exc)) from exc
        except OSError as exc:
            raise WriteError(str(exc)) from exc

    async def aclose(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError):  # closing a broken connection
            await self._writer.wait_closed()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                await self._writer.start_tls(ssl_context, server_hostname=server_hostname)
        except TimeoutError as exc:
            raise ConnectTimeout(str(exc)) from exc
        except (OSError, ssl.SSLError) as exc:
            await self.aclose()
            raise ConnectError(str(exc)) from exc
        return self

    def get_extra_info(self, info: str) -> Any:
        if info == "ssl_object":
            return self._writer.get_extra_info("ssl_object")
        if info == "client_addr":
            return self._writer.get_extra_info("sockname")
        if info == "server_addr":
            return self._writer.get_extra_info("peername")
        if info == "socket":
            return self._writer.get_extra_info("socket")
        if info == "is_readable":
            # An idle kept-alive connection that became readable was closed (or sent
            # garbage): the pool must not reuse it.
            return self._reader.at_eof() or bool(self._reader._buffer)
        return None


class BoundedBackend(httpcore2.AsyncNetworkBackend):
    """httpcore2's network backend over asyncio streams with a bounded read buffer."""

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    host,
                    port,
                    limit=READ_BUFFER,
                    local_addr=(local_address, 0) if local_address else None,
                )
        except TimeoutError as exc:
            raise ConnectTimeout(str(exc)) from exc
        except OSError as exc:
            raise ConnectError(str(exc)) from exc
        # A write waits until the kernel has the bytes (as the SDK's own streams do), so
        # a connection the server closed fails the write, not a later read.
        writer.transport.set_write_buffer_limits(0)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # The loop reads whatever the kernel holds (up to 256 KB) into the reader at
            # once, past its limit; a small receive buffer bounds each read (and the
            # kernel's memory) and leaves the rest of the answer with the provider.
            # 1,000 answers of 1.9 MB in flight (bench/inflight.py, peak PSS): one worker
            # 561-571 -> 396 MiB, two workers 609-618 -> 471 MiB; at c=64 throughput and
            # CPU per request stayed within the (loaded) runs' noise at 1.9 MB and 4K.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, READ_BUFFER)
            for option in socket_options or ():
                sock.setsockopt(*option)
        return _Stream(reader, writer)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_unix_connection(path, limit=READ_BUFFER)
        except TimeoutError as exc:
            raise ConnectTimeout(str(exc)) from exc
        except OSError as exc:
            raise ConnectError(str(exc)) from exc
        return _Stream(reader, writer)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class BoundedTransport(httpx2.AsyncHTTPTransport):
    """httpx2's transport on `BoundedBackend` (its pool is made with httpx2's own
    settings, then given this backend: httpx2 has no argument for it)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        pool = self._pool
        if isinstance(pool, httpcore2.AsyncConnectionPool):
            pool._network_backend = BoundedBackend()


def http_client() -> httpx2.AsyncClient:
    """An HTTP client for the openai SDK: its defaults (limits, timeouts, redirects),
    connections with back-pressure."""
    limits = openai.DEFAULT_CONNECTION_LIMITS  # type: ignore[attr-defined]
    return openai.DefaultAsyncHttpxClient(transport=BoundedTransport(limits=limits))
