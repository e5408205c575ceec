"""An image on its way into the file store: a temp file, hashed while it is written.

A provider's answer is decoded straight into one of these, so no image is ever held
whole in memory; the store then commits it (rename into place, or upload from the file)
or it is discarded, and nothing half-written stays behind.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from imagegate.digest import weave_digest_of
from imagegate.errors import ImagesNotStored
from imagegate.held_image import HeldImage

log = logging.getLogger("imagegate.store")

TEMP_PREFIX = ".tmp-"  # files being written; renamed to their digest when complete


class StagedFile:
    """A temp file in `directory`, with the SHA-256 and size of what was written."""

    def __init__(self, directory: Path) -> None:
        try:
            fd, name = tempfile.mkstemp(dir=directory, prefix=TEMP_PREFIX)
        except FileNotFoundError:  # the first image in it: a mkdir only then
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

    def reader(self) -> HeldImage:
        """What was written so far, readable while the file is committed or discarded
        meanwhile (the open file outlives its name)."""
        self._file.flush()
        return HeldImage(os.open(self.path, os.O_RDONLY), self.size)

    def hold(self) -> HeldImage:
        """What was written, as a `HeldImage` (for an image that is not kept): the file
        is closed and its name removed, so nothing is left behind whatever happens."""
        held = self.reader()
        self.discard()
        return held

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
