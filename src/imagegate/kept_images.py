"""Keeping a generation's images: inspect each one (true type, dimensions), hash it once,
and for a tracked call store it with its Weave `Content` metadata.

An image arrives as the file a provider wrote it into (`StagedFile`): for a tracked call
it is committed to the file store as it is, and for an untracked one it becomes a
`HeldImage` its answer streams from; either way it is never read whole into memory.
Bytes come only from callers that have them already (edit inputs).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import re
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from imagegate.digest import weave_digest_of
from imagegate.errors import ImagesNotStored, InvalidProviderOutput, StorageError
from imagegate.generation import GeneratedImage
from imagegate.held_image import HeldImage
from imagegate.providers.base import ImageFile, MemoryFile
from imagegate.store import FileStore
from imagegate.store.staging import StagedFile
from imagegate.urls import SVG_MIMETYPE, sniff_image_type
from imagegate.weave_shape import content_metadata_of

log = logging.getLogger("imagegate.generation")

_SVG_SIDE = re.compile(rb'<svg[^>]*?\s(width|height)="(\d+)(?:px)?"')
_SNIFF_BYTES = 4096


class ImageKeeper:
    """Images into the file store, by content."""

    def __init__(self, files: FileStore) -> None:
        self.files = files

    def image_files(self, project_id: str, staged: list[StagedFile]) -> Callable[[], StagedFile]:
        """A provider's `image_files` for `project_id`: each new temp file is added to
        `staged`, so the caller can discard whatever was not kept."""

        def new_file() -> StagedFile:
            try:
                file = self.files.stage(project_id)
            except (StorageError, OSError) as exc:
                raise _storage_failed(project_id, exc) from exc
            staged.append(file)
            return file

        return new_file

    async def keep(
        self,
        project_id: str | None,
        image: bytes | ImageFile,
        index: int,
        revised_prompt: str | None,
        response_format: str,
    ) -> GeneratedImage:
        """Inspect an image and, for a tracked call (`project_id`), store it with its
        Weave metadata file. A staged file is stored as it is, or for an untracked call
        held (its answer streams from it); bytes stay with the image."""
        if isinstance(image, MemoryFile):  # a provider used on its own
            image = image.getvalue()
        if not isinstance(image, StagedFile | bytes):
            raise TypeError(f"not an image file: {type(image).__name__}")
        if isinstance(image, StagedFile):
            mimetype, width, height = inspect_image(image.head(_SNIFF_BYTES), image.path)
            sha256, size = image.sha256, image.size
        else:
            mimetype, width, height = inspect_image(image[:_SNIFF_BYTES], image)
            sha256, size = hashlib.sha256(image).digest(), len(image)
        digest = weave_digest_of(sha256)
        metadata_digest = None
        if project_id is not None:
            metadata = content_metadata_of(sha256, size, mimetype, index, response_format)
            stored = (
                self.files.put_staged(project_id, image)
                if isinstance(image, StagedFile)
                else self.files.put(project_id, image)
            )
            try:
                # Both written (and fsynced) at once: one disk wait instead of two.
                _, metadata_digest = await asyncio.gather(
                    stored, self.files.put(project_id, metadata)
                )
            except (StorageError, OSError) as exc:
                raise _storage_failed(project_id, exc) from exc
        held: HeldImage | None = None
        if isinstance(image, StagedFile) and project_id is None:
            held = image.hold()  # nowhere else to answer from
        data = image if isinstance(image, bytes) else None
        return GeneratedImage(
            index=index,
            digest=digest,
            mimetype=mimetype,
            size=size,
            width=width,
            height=height,
            revised_prompt=revised_prompt,
            metadata_digest=metadata_digest,
            data=data,
            held=held,
        )

    def preview(self, image: ImageFile, index: int) -> GeneratedImage:
        """A partial image as it is, before it is kept: passed on at once, read from its
        own file (which stays readable while `keep` commits it)."""
        if isinstance(image, MemoryFile):  # a provider used on its own
            data = image.getvalue()
            mimetype, width, height = inspect_image(data[:_SNIFF_BYTES], data)
            sha256, size, held = hashlib.sha256(data).digest(), len(data), None
        elif isinstance(image, StagedFile):
            mimetype, width, height = inspect_image(image.head(_SNIFF_BYTES), image.path)
            sha256, size, held, data = image.sha256, image.size, image.reader(), None
        else:
            raise TypeError(f"not an image file: {type(image).__name__}")
        return GeneratedImage(
            index=index,
            digest=weave_digest_of(sha256),
            mimetype=mimetype,
            size=size,
            width=width,
            height=height,
            data=data,
            held=held,
        )


def _storage_failed(project_id: str, exc: BaseException) -> ImagesNotStored:
    log.error("storing an image for %s failed: %s", project_id, exc)
    return ImagesNotStored(getattr(exc, "message", None) or str(exc))


def inspect_image(head: bytes, source: bytes | Path) -> tuple[str, int, int]:
    """(true mimetype, width, height) of an image whose first bytes are `head` and whose
    whole is `source` (bytes, or a file Pillow reads only the header of), or
    InvalidProviderOutput (Pillow's errors, mapped here). SVG is markup, recognised by
    its root element; every other type is what Pillow reads it as."""
    if sniff_image_type(head) == SVG_MIMETYPE:
        sides = {m[1].decode(): int(m[2]) for m in _SVG_SIDE.finditer(head)}
        return SVG_MIMETYPE, sides.get("width", 0), sides.get("height", 0)
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
            width, height = img.size
            return Image.MIME.get(img.format or "", "application/octet-stream"), width, height
    except Exception as exc:
        raise InvalidProviderOutput("provider returned data that is not an image") from exc
