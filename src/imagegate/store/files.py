"""Content-addressed file storage: the protocol and the local-disk backend."""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Protocol

from imagegate.digest import is_digest, weave_digest
from imagegate.errors import StorageError
from imagegate.names import split_project_id

TEMP_PREFIX = ".tmp-"  # files being written; renamed to their digest when complete


class FileStore(Protocol):
    """Bytes by (project, digest). A stored file is visible only once complete."""

    async def put(self, project_id: str, data: bytes) -> str:
        """Store `data`, returning its Weave digest; storing the same bytes twice is a no-op."""
        ...

    async def get(self, project_id: str, digest: str) -> bytes | None: ...

    async def exists(self, project_id: str, digest: str) -> bool: ...

    async def delete(self, project_id: str, digest: str) -> None:
        """Remove a file (no error if it is already gone). Only the purge calls this:
        files are shared by content, so only it knows nothing references one."""
        ...

    async def ping(self) -> None:
        """Raise unless the store can be used right now (cheap: for readiness checks)."""
        ...


class LocalFileStore:
    """Files under `root/<entity>/<project>/<2 chars>/<digest>`.

    Each project has its own tree, so one project can never read another's bytes even
    by digest; within a project, identical bytes are stored once.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, project_id: str, digest: str) -> Path:
        entity, project = split_project_id(project_id)
        if not is_digest(digest):
            raise ValueError(f"not a digest: {digest!r}")
        return self.root / entity / project / digest[:2] / digest

    async def put(self, project_id: str, data: bytes) -> str:
        digest = weave_digest(data)
        path = self._path(project_id, digest)
        try:
            await asyncio.to_thread(self._write, path, data)
        except OSError as exc:  # a full or failing disk: mapped here, where it enters
            raise StorageError(f"writing {path}: {exc!r}") from exc
        return digest

    async def get(self, project_id: str, digest: str) -> bytes | None:
        path = self._path(project_id, digest)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"reading {path}: {exc!r}") from exc

    async def exists(self, project_id: str, digest: str) -> bool:
        return await asyncio.to_thread(self._path(project_id, digest).is_file)

    async def delete(self, project_id: str, digest: str) -> None:
        await asyncio.to_thread(self._path(project_id, digest).unlink, missing_ok=True)

    async def ping(self) -> None:
        await asyncio.to_thread(self._check_writable)

    def _check_writable(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise PermissionError(f"file store {self.root} is not writable")

    async def remove_temp_files(self, older_than_s: float | None = None) -> int:
        """Delete the temp files a process killed mid-write left behind (only those
        older than `older_than_s`, when given); how many. Readers never open them."""
        return await asyncio.to_thread(self._remove_temp_files, older_than_s)

    def _remove_temp_files(self, older_than_s: float | None) -> int:
        cutoff = None if older_than_s is None else time.time() - older_than_s
        removed = 0
        for tmp in self.root.glob(f"*/*/*/{TEMP_PREFIX}*"):
            try:
                if cutoff is None or tmp.stat().st_mtime < cutoff:
                    tmp.unlink()
                    removed += 1
            except FileNotFoundError:
                pass  # its writer finished (or another sweep got it) meanwhile
        return removed

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        if path.exists():
            return  # same digest, same bytes
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Write to a temp file in the same directory, fsync, then rename: readers see
        # either no file or the whole file, never a prefix.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=TEMP_PREFIX)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
