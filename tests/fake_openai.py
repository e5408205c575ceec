"""A local HTTP server speaking OpenAI's Images protocol, for tests and benchmarks.

It is a real server on loopback (uvicorn in a thread), so imagegate's provider, the
official SDK and the URL downloader are exercised exactly as against the real API:
JSON generations, multipart edits (`image`, `image[]`, `mask`), and server-sent events
for `stream: true` (partial images, then the completed one).
Tests script its answers (`push`) and read what it received (`requests`). A reply can
be any status, headers (Retry-After) and body (HTML, broken JSON), come late, never come
(`hang`), or wait at a `Gate` until the test opens it. For image URLs it also serves a
redirect, a download that hangs, and one that declares a size past any limit.
`refused_url()` is an address where nothing listens.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from PIL import Image


def small_png(index: int = 0, size: int = 64) -> bytes:
    colour = ((index * 70) % 256, (index * 130 + 60) % 256, (index * 200 + 120) % 256)
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, format="PNG")
    return buf.getvalue()


@dataclass
class Reply:
    """One scripted answer. Without `body`/`json`, a success with `n` base64 images."""

    status: int = 200
    json: Any = None
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    usage: dict[str, Any] | None = None
    urls: list[str] | None = None  # answer with these image URLs instead of base64
    image: bytes | None = None  # answer with these bytes as every image (else small PNGs)
    partial_delay_s: float = 0.0  # streaming: the wait before each partial and the final
    partial_image: bytes | None = None  # streaming: every partial's bytes (else small PNGs)
    stream_error: dict[str, Any] | None = None  # streaming: an `error` event after partials
    content_type: str = "application/json"  # of `body`
    hang: bool = False  # never answer: hold the request until the client gives up
    gate: Gate | None = None  # hold the request until the test opens the gate


class Gate:
    """Holds the requests that reach it until the test calls `open()`.

    Used from the test's thread while the fake serves in its own, so its state is
    plain thread-safe counters; `until_held` polls them without blocking an event loop.
    """

    def __init__(self) -> None:
        self._open = threading.Event()
        self._lock = threading.Lock()
        self.held = 0  # requests that reached the gate, ever
        self.waiting = 0  # requests held right now

    @property
    def is_open(self) -> bool:
        return self._open.is_set()

    def open(self) -> None:
        self._open.set()

    def _arrive(self, delta: int) -> None:
        with self._lock:
            self.waiting += delta
            self.held += max(0, delta)

    async def until_held(self, count: int = 1, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while self.held < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.held} of {count} requests reached the gate")
            await asyncio.sleep(0.01)


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]  # JSON body, or a multipart request's text fields
    at: float
    # A multipart request's files by field name: (filename, bytes, content type) each.
    files: dict[str, list[tuple[str, bytes, str]]] = field(default_factory=dict)
    port: int = 0  # the client's: which connection it came on


def error_body(message: str, code: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "error": {
            "message": message,
            "type": "invalid_request_error",
            "param": None,
            "code": code,
            **extra,
        }
    }


class FakeOpenAI:
    def __init__(self, keep_alive_s: float = 5.0) -> None:
        self.keep_alive_s = keep_alive_s  # closes a connection idle this long
        self.requests: list[Received] = []
        self.script: list[Reply] = []
        # Chooses the answer for each request the script does not cover (from its body).
        self.responder: Callable[[dict[str, Any]], Reply] | None = None
        self.downloads = 0
        self.download_bytes_sent = 0  # of the responses below that declare a huge size
        self._gates: list[Gate] = []
        self.app = self._build()
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: uvicorn.Server | None = None

    def reset(self) -> None:
        self.open_gates()
        self.requests.clear()
        self.script.clear()
        self.responder = None
        self.downloads = 0
        self.download_bytes_sent = 0

    def open_gates(self) -> None:
        """Let every held request go (also the hung ones), so none outlives its test."""
        for gate in self._gates:
            gate.open()
        self._gates.clear()

    def push(self, *replies: Reply) -> None:
        self.script.extend(replies)

    def _build(self) -> FastAPI:
        app = FastAPI()

        async def generations(request: Request) -> Response:
            files: dict[str, list[tuple[str, bytes, str]]] = {}
            if request.headers.get("content-type", "").startswith("multipart/form-data"):
                body: dict[str, Any] = {}
                form = await request.form()
                for name, value in form.multi_items():
                    if isinstance(value, str):
                        body[name] = value
                    else:
                        data = await value.read()
                        part = (value.filename or "", data, value.content_type or "")
                        files.setdefault(name, []).append(part)
            else:
                body = await request.json()
            path = request.url.path + ("?" + request.url.query if request.url.query else "")
            port = request.client.port if request.client else 0
            headers = dict(request.headers)
            received = Received(path, headers, body, time.monotonic(), files, port)
            self.requests.append(received)
            if self.script:
                reply = self.script.pop(0)
            else:
                reply = self.responder(body) if self.responder else Reply()
            if reply.delay_s:
                await asyncio.sleep(reply.delay_s)
            gate = reply.gate or (Gate() if reply.hang else None)
            if gate is not None:
                self._gates.append(gate)
                if not await self._hold(request, gate):
                    return Response(status_code=499)  # the client went away
            if str(body.get("stream")).lower() == "true" and reply.status == 200:
                edit = request.url.path.endswith("/edits")
                return StreamingResponse(_events(body, reply, edit), media_type="text/event-stream")
            if reply.body is not None:
                return Response(reply.body, reply.status, reply.headers, reply.content_type)
            if reply.json is not None:
                return JSONResponse(reply.json, reply.status, reply.headers)
            n = int(body.get("n") or 1)
            if reply.urls is not None:
                data = [{"url": u} for u in reply.urls]
            else:
                pngs = [reply.image or small_png(i) for i in range(n)]
                data = [{"b64_json": base64.b64encode(png).decode()} for png in pngs]
            answer: dict[str, Any] = {"created": int(time.time()), "data": data}
            if reply.usage is not None:
                answer["usage"] = reply.usage
            return JSONResponse(answer, reply.status, reply.headers)

        app.add_api_route("/v1/images/generations", generations, methods=["POST"])
        app.add_api_route("/v1/images/edits", generations, methods=["POST"])
        app.add_api_route(
            "/openai/deployments/{deployment}/images/generations", generations, methods=["POST"]
        )

        @app.get("/img/{index}.png")
        async def image(index: int) -> Response:
            self.downloads += 1
            return Response(small_png(index), media_type="image/png")

        @app.get("/huge.png")
        async def huge() -> StreamingResponse:
            self.downloads += 1

            async def body() -> AsyncIterator[bytes]:
                chunk = b"\0" * (1024 * 1024)
                for _ in range(200):  # 200 MB, no Content-Length
                    yield chunk

            return StreamingResponse(body(), media_type="image/png")

        @app.get("/redirect/{index}.png")
        async def redirect(index: int) -> Response:
            self.downloads += 1
            return Response(status_code=302, headers={"Location": f"{self.url}/img/{index}.png"})

        @app.get("/hanging.png")
        async def hanging(request: Request) -> Response:
            self.downloads += 1
            gate = Gate()
            self._gates.append(gate)
            await self._hold(request, gate)
            return Response(small_png(0), media_type="image/png")

        @app.get("/declared/{size}.png")
        async def declared(size: int) -> StreamingResponse:
            """Declares `size` bytes, then sends one small chunk and stalls: only a client
            that trusts Content-Length refuses it at once."""
            self.downloads += 1

            async def body() -> AsyncIterator[bytes]:
                chunk = small_png(0)
                self.download_bytes_sent += len(chunk)
                yield chunk
                await asyncio.sleep(60)

            headers = {"Content-Length": str(size)}
            return StreamingResponse(body(), media_type="image/png", headers=headers)

        return app

    async def _hold(self, request: Request, gate: Gate) -> bool:
        """Wait at `gate`; False when the client disconnected first."""
        gate._arrive(1)
        try:
            while not gate.is_open:
                if await request.is_disconnected():
                    return False
                await asyncio.sleep(0.02)
            return True
        finally:
            gate._arrive(-1)

    def start(self) -> None:
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            timeout_keep_alive=self.keep_alive_s,  # type: ignore[arg-type]
        )
        self._server = uvicorn.Server(config)
        thread = threading.Thread(target=self._server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("fake OpenAI server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.open_gates()
        if self._server is not None:
            self._server.should_exit = True


def _sse(data: dict[str, Any], event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data)}\n\n".encode()


async def _events(body: dict[str, Any], reply: Reply, edit: bool) -> AsyncIterator[bytes]:
    """OpenAI's stream: `partial_images` partial events, then the completed image."""
    kind = "image_edit" if edit else "image_generation"
    common = {
        "background": body.get("background") or "opaque",
        "output_format": body.get("output_format") or "png",
        "quality": body.get("quality") or "auto",
        "size": body.get("size") or "1024x1024",
    }
    for index in range(int(body.get("partial_images") or 0)):
        if reply.partial_delay_s:
            await asyncio.sleep(reply.partial_delay_s)
        png = reply.partial_image or small_png(10 + index)
        yield _sse(
            {
                "type": f"{kind}.partial_image",
                "b64_json": base64.b64encode(png).decode(),
                "partial_image_index": index,
                "created_at": int(time.time()),
                **common,
            },
            f"{kind}.partial_image",
        )
    if reply.stream_error is not None:
        yield _sse({"type": "error", "error": reply.stream_error}, "error")
        return
    if reply.partial_delay_s:
        await asyncio.sleep(reply.partial_delay_s)
    usage = reply.usage or {
        "input_tokens": 10,
        "input_tokens_details": {"text_tokens": 10, "image_tokens": 0},
        "output_tokens": 272,
        "total_tokens": 282,
    }
    yield _sse(
        {
            "type": f"{kind}.completed",
            "b64_json": base64.b64encode(reply.image or small_png(0)).decode(),
            "created_at": int(time.time()),
            "usage": usage,
            **common,
        },
        f"{kind}.completed",
    )


def refused_url() -> str:
    """A loopback URL where nothing listens: connecting is refused at once."""
    return f"http://127.0.0.1:{_free_port()}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
