"""A JSON answer whose image strings are base64 streamed from the file store.

The answer is rendered once with a marker where each image's base64 goes (a few hundred
bytes), then sent as that JSON's pieces around each image, encoded chunk by chunk as it
is read: the same bytes `JSONResponse` would send, with a Content-Length, but never the
image whole in memory, let alone its base64 and the JSON string around it.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi.responses import Response, StreamingResponse

from imagegate.errors import ImagegateError
from imagegate.generation import GeneratedImage, Generation
from imagegate.store import FileStore

# Raw bytes per base64 chunk: a multiple of 3, so the chunks' encodings join up.
CHUNK = 3 * 64 * 1024
# What gives an image's base64 while an answer is built (`Base64Answer.marker`).
ImageB64 = Callable[[GeneratedImage], str]


def render_json(content: Any) -> bytes:
    """JSON exactly as `JSONResponse` renders it."""
    return json.dumps(
        content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    ).encode("utf-8")


def b64_length(size: int) -> int:
    return 4 * ((size + 2) // 3)


class Base64Answer:
    """`marker(image)` stands in for each image's base64 while the answer is built;
    `response()` sends it with the real base64 in place of each marker."""

    def __init__(self, files: FileStore, generation: Generation) -> None:
        self.files = files
        self.generation = generation
        self._token = f"imagegate-b64-{secrets.token_hex(12)}-"
        self._images: list[GeneratedImage] = []

    def marker(self, image: GeneratedImage) -> str:
        self._images.append(image)
        return f"{self._token}{len(self._images) - 1}."

    async def response(self, content: Any, headers: dict[str, str]) -> Response:
        body = render_json(content)
        pieces = re.split(rb"%s(\d+)\." % re.escape(self._token.encode()), body)
        texts, numbers = pieces[0::2], [int(n) for n in pieces[1::2]]
        # Every file is opened before the answer starts: a missing one is an error
        # answer, not a broken stream.
        sources = [await self._open(self._images[n]) for n in numbers]
        length = sum(map(len, texts)) + sum(b64_length(self._images[n].size) for n in numbers)

        async def stream() -> AsyncIterator[bytes]:
            for text, source in zip(texts, [*sources, None], strict=True):
                yield text
                if source is not None:
                    async for chunk in _encoded(source):
                        yield chunk

        headers = {**headers, "content-length": str(length)}
        return StreamingResponse(stream(), media_type="application/json", headers=headers)

    async def _open(self, image: GeneratedImage) -> AsyncIterator[bytes]:
        if image.data is not None:
            return _chunks_of(image.data)
        chunks = await self.files.chunks(self.generation.project_id, image.digest, CHUNK)
        if chunks is None:
            raise ImagegateError(
                f"image {image.digest} of call {self.generation.call_id} is missing"
            )
        return chunks


async def _chunks_of(data: bytes) -> AsyncIterator[bytes]:
    view = memoryview(data)
    for start in range(0, len(view), CHUNK):
        yield bytes(view[start : start + CHUNK])


async def _encoded(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Base64 of the concatenated chunks, whatever their sizes."""
    rest = b""
    async for chunk in chunks:
        data = rest + chunk if rest else chunk
        cut = len(data) - len(data) % 3
        rest = data[cut:]
        if cut:
            yield base64.b64encode(data[:cut])
    if rest:
        yield base64.b64encode(rest)
