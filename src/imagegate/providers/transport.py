"""The provider SDK's connections: httpx2's interface over aiohttp, with back-pressure.

The openai SDK speaks httpx2; httpx2's own stack (httpcore2 and h11, in Python) was a
large share of each generation's CPU (py-spy, 130 KB answers). aiohttp parses HTTP in C
and is the transport the SDK itself documents as its faster option, so the SDK is given
an httpx2 transport that sends each request through an aiohttp session (sequential SDK
calls at c=16, 3 interleaved runs: 0.77-0.86 -> 0.43-0.46 ms CPU a call at 130 KB,
2.41-2.60 -> 1.45-1.67 ms at 1.9 MB; the SDK's own aiohttp client: 0.51-0.58, 2.55-3.0).

Back-pressure: aiohttp's reader pauses the socket past a small buffer, and each socket's
receive buffer is small too, so the kernel's window holds the rest of an answer back
with the provider: memory per answer in flight stays a few hundred KB, whatever the
image's size (bench/inflight.py, 1,000 answers of 1.9 MB in flight: peak PSS 399-410
MiB, 430 on the previous stack in the same window).
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import aiohttp
import httpx2
import openai
from yarl import URL

# aiohttp's reader stops reading the socket when this much (x2) is waiting to be read.
# 64 KB, measured against 128 KB on the previous stack (bench/inflight.py, 1,000 answers
# of 1.9 MB in flight): peak RSS 510-522 vs 629-662 MiB; 3840x2160 at c=64 within noise.
READ_BUFFER = 64 * 1024


def _socket(addr_info: Any) -> socket.socket:
    """Each connection's socket: no Nagle delay, and a small receive buffer (set before
    connecting, so the window it advertises is small from the start). The loop reads
    whatever the kernel holds at once, past the reader's limit: this bounds each read
    (and the kernel's memory) and leaves the rest of the answer with the provider.
    1,000 answers of 1.9 MB in flight (bench/inflight.py, peak PSS), on the previous
    stack: one worker 561-571 -> 396 MiB, two workers 609-618 -> 471 MiB."""
    family, kind, proto, _, _ = addr_info
    sock = socket.socket(family=family, type=kind, proto=proto)
    if family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, READ_BUFFER)
    return sock


@contextmanager
def _httpx_errors() -> Iterator[None]:
    """aiohttp's (and the OS's) errors as httpx2's, which the SDK turns into its
    APITimeoutError / APIConnectionError and `classify_failure` reads by class name."""
    try:
        yield
    except aiohttp.ConnectionTimeoutError as exc:  # connect, or a wait for the pool
        raise httpx2.ConnectTimeout(str(exc) or "timed out connecting") from exc
    except (aiohttp.ServerTimeoutError, TimeoutError) as exc:
        raise httpx2.ReadTimeout(str(exc) or "timed out reading the answer") from exc
    except aiohttp.ClientConnectorError as exc:  # refused, DNS, TLS: nothing was sent
        raise httpx2.ConnectError(str(exc)) from exc
    except aiohttp.ServerDisconnectedError as exc:
        # As httpcore2 says it: the request may have reached the provider.
        raise httpx2.RemoteProtocolError(str(exc) or "server disconnected") from exc
    except aiohttp.ClientResponseError as exc:  # an answer that is not HTTP
        raise httpx2.RemoteProtocolError(exc.message) from exc
    except (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError) as exc:
        raise httpx2.UnsupportedProtocol(str(exc)) from exc
    except (aiohttp.ClientError, OSError) as exc:
        kind = httpx2.WriteError if _refused(exc) else httpx2.ReadError
        raise kind(str(exc) or type(exc).__name__) from exc


def _refused(exc: BaseException) -> bool:
    """Whether the request's bytes were refused, so the provider cannot have read it
    whole: aiohttp found the connection closing before it wrote (a kept-alive one the
    provider closed as it was taken from the pool: its ConnectionResetError without an
    errno), or the kernel refused them (a broken pipe). Anything else: it may have."""
    current: BaseException | None = exc
    while current is not None:
        if isinstance(current, ConnectionResetError) and current.errno is None:
            return True
        if getattr(current, "errno", None) == errno.EPIPE:
            return True
        current = current.__cause__
    return False


class _Body(httpx2.AsyncByteStream):
    """An answer's body as aiohttp reads it (still encoded: httpx2 decodes it)."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _httpx_errors():
            # Each piece as the socket gave it, neither joined nor split (against
            # iter_chunked(64 KB) and iter_any, 3 interleaved runs each: 0.51-0.56 vs
            # 0.51-0.62 and 0.53-0.56 ms CPU a call at 130 KB; 1.2-1.8 vs 1.6-2.0 and
            # 1.5-1.8 ms at 1.9 MB).
            async for chunk, _ in self._response.content.iter_chunks():
                yield chunk

    async def aclose(self) -> None:
        # Back to the pool when read to its end, else the connection is closed.
        self._response.release()


class AiohttpTransport(httpx2.AsyncBaseTransport):
    """An httpx2 transport sending each request through one aiohttp session (made on
    the first request, in the loop that runs it). httpx2 keeps redirects, cookies and
    decoding; aiohttp only moves the bytes. Proxies from the environment are not used,
    as before (httpx2 ignores them for a client given its transport, and aiohttp's
    `trust_env` would also read ~/.netrc); SSL_CERT_FILE/SSL_CERT_DIR are."""

    def __init__(self, limits: httpx2.Limits) -> None:
        self._limits = limits
        # Verification as httpx2's default client does it (certifi, SSL_CERT_FILE/DIR).
        self._ssl = httpx2.create_ssl_context(verify=True, trust_env=True)
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _session_here(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        session = self._session
        if session is None or loop is not self._loop or session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._limits.max_connections or 0,
                keepalive_timeout=self._limits.keepalive_expiry,
                ssl=self._ssl,
                socket_factory=_socket,
            )
            session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                read_bufsize=READ_BUFFER,
                timeout=aiohttp.ClientTimeout(total=None),
                trust_env=False,
            )
            self._session, self._loop = session, loop
        return session

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        session = self._session_here()
        timeout = request.extensions.get("timeout") or {}
        pool, connect = timeout.get("pool"), timeout.get("connect")
        try:
            body: bytes | None = request.content
        except httpx2.RequestNotRead:  # a multipart edit: its parts are in memory
            body = await request.aread()
        with _httpx_errors():
            response = await session.request(
                request.method,
                URL(str(request.url), encoded=True),
                headers=request.headers.multi_items(),
                data=body or None,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    # aiohttp's `connect` is the wait for the pool and the connection.
                    connect=None if pool is None or connect is None else pool + connect,
                    sock_connect=connect,
                    sock_read=timeout.get("read"),
                ),
                server_hostname=request.extensions.get("sni_hostname"),
            )
        reason = (response.reason or "").encode()
        return httpx2.Response(
            response.status,
            headers=response.raw_headers,
            stream=_Body(response),
            request=request,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": reason},
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def http_client() -> httpx2.AsyncClient:
    """An HTTP client for the openai SDK: its defaults (limits, timeouts, redirects),
    requests sent by aiohttp with back-pressure."""
    limits = openai.DEFAULT_CONNECTION_LIMITS  # type: ignore[attr-defined]
    return openai.DefaultAsyncHttpxClient(transport=AiohttpTransport(limits))
