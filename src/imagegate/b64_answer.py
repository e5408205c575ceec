"""An answer (JSON, or server-sent events) whose image strings are base64 streamed from
the file store, or from the file an untracked generation holds its image in.

The answer is rendered once with a marker where each image's base64 goes (a few hundred
bytes), then sent as that JSON's pieces around each image, encoded chunk by chunk as it
is read: the same bytes `JSONResponse` would send, with a Content-Length, but never the
image whole in memory, let alone its base64 and the JSON string around it.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pybase64
from fastapi.responses import Response, StreamingResponse

from imagegate.errors import ImagegateError
from imagegate.generation import GeneratedImage, ImageB64
from imagegate.store import FileStore

# Raw bytes per base64 chunk: a multiple of 3, so the chunks' encodings join up.
CHUNK = 3 * 64 * 1024
# From a held file (read on the loop, from the page cache) for an untracked answer,
# smaller: its encoding is the transport's 64 KB high-water mark, so an answer in flight
# holds about that much. A stream's partial images go in CHUNKs: fewer writes, sooner.
HELD_CHUNK = 3 * 16 * 1024
__all__ = ["CHUNK", "HELD_CHUNK", "Base64Answer", "ImageB64", "b64_length", "render_json"]


def render_json(content: Any) -> bytes:
    """JSON exactly as `JSONResponse` renders it."""
    return json.dumps(
        content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    ).encode("utf-8")


def b64_length(size: int) -> int:
    return 4 * ((size + 2) // 3)


class Base64Answer:
    """`marker(image)` stands in for each image's base64 while an answer is built;
    `response()` sends it (or `pieces()` gives it) with the real base64 in place of each
    marker. Images of `project_id`: stored ones are read from the file store, an untracked
    generation's from the file it holds them in."""

    def __init__(self, files: FileStore, project_id: str, held_chunk: int = HELD_CHUNK) -> None:
        self.files = files
        self.project_id = project_id
        self.held_chunk = held_chunk  # raw bytes per piece read from a held file
        self._token = f"imagegate-b64-{secrets.token_hex(12)}-"
        self._images: list[GeneratedImage] = []

    def marker(self, image: GeneratedImage) -> str:
        self._images.append(image)
        return f"{self._token}{len(self._images) - 1}."

    async def pieces(self, body: bytes) -> tuple[AsyncIterator[bytes], int]:
        """`body` (rendered with markers) as it is sent, and its length. Every file is
        opened before this returns: a missing one is an error now, not a broken stream."""
        pieces = re.split(rb"%s(\d+)\." % re.escape(self._token.encode()), body)
        texts, numbers = pieces[0::2], [int(n) for n in pieces[1::2]]
        sources = [await self._open(self._images[n]) for n in numbers]
        length = sum(map(len, texts)) + sum(b64_length(self._images[n].size) for n in numbers)

        async def stream() -> AsyncIterator[bytes]:
            # The JSON around an image goes out with its first piece: one write less
            # (each write may wait for the client to read: it counts under load).
            pending = b""
            for text, source in zip(texts, [*sources, None], strict=True):
                pending += text
                if source is not None:
                    async for chunk in _encoded(source):
                        yield pending + chunk if pending else chunk
                        pending = b""
            if pending:
                yield pending

        return stream(), length

    async def response(self, content: Any, headers: dict[str, str]) -> Response:
        body, length = await self.pieces(render_json(content))
        headers = {**headers, "content-length": str(length)}
        return StreamingResponse(body, media_type="application/json", headers=headers)

    async def _open(self, image: GeneratedImage) -> AsyncIterator[bytes]:
        if image.data is not None:
            return _chunks_of(image.data)
        if image.held is not None:
            return image.held.chunks(self.held_chunk)
        chunks = await self.files.chunks(self.project_id, image.digest, CHUNK)
        if chunks is None:
            raise ImagegateError(f"image {image.digest} of {self.project_id} is missing")
        return chunks


async def _chunks_of(data: bytes) -> AsyncIterator[bytes]:
    view = memoryview(data)
    for start in range(0, len(view), CHUNK):
        yield bytes(view[start : start + CHUNK])


async def _encoded(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Base64 of the concatenated chunks, whatever their sizes. Only the encoded piece is
    alive while it is sent (the chunk it came from is let go first)."""
    rest = b""
    async for chunk in chunks:
        data = rest + chunk if rest else chunk
        cut = len(data) - len(data) % 3
        rest = data[cut:]
        encoded = pybase64.b64encode(memoryview(data)[:cut]) if cut else b""
        chunk = data = b""
        if encoded:
            yield encoded
    if rest:
        yield pybase64.b64encode(rest)
