"""An image's bytes in an open file, whose name may be gone (see `StagedFile.hold`)."""

from __future__ import annotations

import os
import weakref
from collections.abc import AsyncIterator


class HeldImage:
    """The bytes of an image kept nowhere (an untracked generation's), or not kept yet
    (a partial image passed on before it is stored), in an open file that may have no
    name any more: read in chunks for its answer, never whole in memory. The descriptor
    is closed when nothing refers to the image."""

    def __init__(self, fd: int, size: int) -> None:
        self.size = size
        self._fd = fd
        weakref.finalize(self, os.close, fd)

    def read_at(self, offset: int, size: int) -> bytes:
        return os.pread(self._fd, size, offset)

    async def chunks(self, chunk_size: int) -> AsyncIterator[bytes]:
        # Read on the event loop: the file was just written, so this is a copy from the
        # page cache (microseconds), like `StagedFile.write`; a thread hop would cost more.
        for offset in range(0, self.size, chunk_size):
            yield self.read_at(offset, chunk_size)

    def read(self) -> bytes:
        """All of it (only where a whole copy is unavoidable: an idempotency record)."""
        return self.read_at(0, self.size)
