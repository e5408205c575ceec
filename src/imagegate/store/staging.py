"""An image on its way into the file store: a temp file, hashed while it is written.

A provider's answer is decoded straight into one of these, so no image is ever held
whole in memory; the store then commits it (rename into place, or upload from the file)
or it is discarded, and nothing half-written stays behind.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import tempfile
import time
import weakref
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

from imagegate.digest import weave_digest_of
from imagegate.errors import ImagesNotStored

log = logging.getLogger("imagegate.store")

TEMP_PREFIX = ".tmp-"  # files being written; renamed to their digest when complete


class StagedFile:
    """A temp file in `directory`, with the SHA-256 and size of what was written."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=directory, prefix=TEMP_PREFIX)
        self.path = Path(name)
        self._file = os.fdopen(fd, "wb")
        self._sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        # A buffered write to the page cache: microseconds, so it stays on the event
        # loop; the fsync (the slow part) happens once, in a thread, at commit.
        try:
            self._file.write(data)
        except OSError as exc:  # a full or failing disk: mapped here, where it enters
            log.error("writing an image to %s failed: %r", self.path, exc)
            raise ImagesNotStored(f"writing {self.path}: {exc!r}") from exc
        self._sha256.update(data)
        self.size += len(data)

    @property
    def sha256(self) -> bytes:
        return self._sha256.digest()

    @property
    def digest(self) -> str:
        """The Weave digest of the bytes written so far."""
        return weave_digest_of(self._sha256.digest())

    def head(self, size: int) -> bytes:
        """The first `size` bytes written (to sniff the type)."""
        self._file.flush()
        with self.path.open("rb") as f:
            return f.read(size)

    def hold(self) -> HeldImage:
        """What was written, as a `HeldImage` (for an image that is not kept): the file
        is closed and its name removed, so nothing is left behind whatever happens."""
        self._file.flush()
        fd = os.open(self.path, os.O_RDONLY)
        self.discard()
        return HeldImage(fd, self.size)

    def sync(self) -> None:
        """Flush, fsync and close (blocking: call it in a thread)."""
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()

    def discard(self) -> None:
        """Close and delete the temp file (no error if it is already gone or committed)."""
        if not self._file.closed:
            self._file.close()
        self.path.unlink(missing_ok=True)


class HeldImage:
    """The bytes of an image kept nowhere (an untracked generation's), in a file that
    has no name any more: read in chunks for its answer, never whole in memory. The
    descriptor is closed when nothing refers to the image."""

    def __init__(self, fd: int, size: int) -> None:
        self.size = size
        self._fd = fd
        self._close = weakref.finalize(self, os.close, fd)

    def read_at(self, offset: int, size: int) -> bytes:
        return os.pread(self._fd, size, offset)

    async def chunks(self, chunk_size: int) -> AsyncIterator[bytes]:
        for offset in range(0, self.size, chunk_size):
            yield await asyncio.to_thread(self.read_at, offset, chunk_size)

    def read(self) -> bytes:
        """All of it (only where a whole copy is unavoidable: an idempotency record)."""
        return self.read_at(0, self.size)

    def close(self) -> None:
        self._close()


def remove_stale(temps: Iterable[Path], older_than_s: float | None) -> int:
    """Delete the temp files among `temps` (only those older than `older_than_s`, when
    given); how many. Readers never open them."""
    cutoff = None if older_than_s is None else time.time() - older_than_s
    removed = 0
    for tmp in temps:
        try:
            if cutoff is None or tmp.stat().st_mtime < cutoff:
                tmp.unlink()
                removed += 1
        except FileNotFoundError:
            pass  # its writer finished (or another sweep got it) meanwhile
    return removed
