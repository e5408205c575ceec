"""Thumbnails: made once per image, kept on local disk, served from there afterwards.

Images are content-addressed, so a thumbnail never goes stale and the cache needs no
invalidation. The cache is per replica (local disk) and may be deleted at any time.
"""

from __future__ import annotations

import asyncio
import io
import os
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

from PIL import Image

from imagegate.digest import is_digest
from imagegate.names import split_project_id
from imagegate.urls import sniff_image_type

THUMB_SIDE = 256  # CSS pixels of a grid cell are ~200; 256 stays sharp at 1.25x zoom
THUMB_QUALITY = 75
# Decoding costs 4 bytes a pixel (more while resampling): a 8000x8000 PNG uploaded through
# /file/create took 500 MB. 4096x4096 covers every model's largest size (3840x2160).
MAX_SOURCE_PIXELS = 4096 * 4096


class ImageTooLarge(Exception):
    """An image with more pixels than a thumbnail may decode."""

    def __init__(self, width: int, height: int, limit: int) -> None:
        super().__init__(
            f"The image is {width}x{height} pixels; previews are made only for images of "
            f"at most {limit:,} pixels."
        )


class ThumbnailCache:
    def __init__(
        self, root: Path, *, workers: int | None = None, max_pixels: int = MAX_SOURCE_PIXELS
    ) -> None:
        self.root = root
        self.max_pixels = max_pixels
        # Decoding a large PNG is CPU-bound: at most one thumbnail per core at a time, so a
        # cold gallery page does not starve the requests that serve pages.
        self._slots = asyncio.Semaphore(workers or os.cpu_count() or 2)
        self._pending: dict[Path, asyncio.Task[bytes | None]] = {}

    def path(self, project_id: str, digest: str) -> Path:
        entity, project = split_project_id(project_id)
        if not is_digest(digest):
            raise ValueError(f"not a digest: {digest!r}")
        return self.root / entity / project / digest[:2] / f"{digest}.webp"

    async def get(
        self, project_id: str, digest: str, load: Callable[[], Awaitable[bytes | None]]
    ) -> bytes | None:
        """The thumbnail's WebP bytes, made from `load()` on first use; None if no image."""
        path = self.path(project_id, digest)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            pass
        # One rendering per new thumbnail, shared by concurrent requests, in a task of its
        # own: a browser that goes away mid-way does not waste the work already done.
        task = self._pending.get(path)
        if task is None:
            task = asyncio.create_task(self._make(path, load))
            self._pending[path] = task
            task.add_done_callback(lambda done: self._finished(path, done))
        return await asyncio.shield(task)

    def _finished(self, path: Path, task: asyncio.Task[bytes | None]) -> None:
        self._pending.pop(path, None)
        if not task.cancelled():
            task.exception()  # retrieved: a failure nobody waited for is not logged as lost

    async def _make(self, path: Path, load: Callable[[], Awaitable[bytes | None]]) -> bytes | None:
        source = await load()
        if source is None or sniff_image_type(source) == "application/octet-stream":
            return None
        async with self._slots:
            await asyncio.to_thread(check_pixels, source, self.max_pixels)
            data = await asyncio.to_thread(render_thumbnail, source)
        if data is not None:
            await asyncio.to_thread(_write_atomic, path, data)
        return data


def check_pixels(source: bytes, max_pixels: int) -> None:
    """ImageTooLarge past `max_pixels`, read from the header: nothing is decoded."""
    try:
        with Image.open(io.BytesIO(source)) as img:
            width, height = img.size
    except (OSError, ValueError, Image.DecompressionBombError):
        return  # not an image (render_thumbnail says so), or too large by Pillow's own rule
    if width * height > max_pixels:
        raise ImageTooLarge(width, height, max_pixels)


def render_thumbnail(source: bytes) -> bytes | None:
    """A WebP thumbnail; None for bytes that are no image or past MAX_SOURCE_PIXELS."""
    try:
        with Image.open(io.BytesIO(source)) as img:
            if img.width * img.height > MAX_SOURCE_PIXELS:
                return None
            # draft() lets JPEG decode at a reduced scale; other formats ignore it.
            img.draft("RGB", (THUMB_SIDE * 2, THUMB_SIDE * 2))
            img.thumbnail((THUMB_SIDE, THUMB_SIDE), Image.Resampling.LANCZOS, reducing_gap=3.0)
            if img.mode not in ("RGB", "RGBA"):
                img = img.convert("RGBA" if "A" in img.getbands() or "transparency" in img.info
                                  else "RGB")  # fmt: skip
            out = io.BytesIO()
            img.save(out, "WEBP", quality=THUMB_QUALITY, method=4)
            return out.getvalue()
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def _write_atomic(path: Path, data: bytes) -> None:
    # Temp file + rename: a reader (or another replica sharing the disk) never sees half
    # a thumbnail. No fsync: a lost thumbnail is simply made again.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
