"""Content-addressed file storage: the protocol and the local-disk backend."""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol

from imagegate.digest import is_digest, weave_digest
from imagegate.errors import StorageError
from imagegate.names import split_project_id
from imagegate.store.staging import TEMP_PREFIX, StagedFile, remove_stale

__all__ = ["TEMP_PREFIX", "FileStore", "LocalFileStore", "StagedFile"]


class FileStore(Protocol):
    """Bytes by (project, digest). A stored file is visible only once complete."""

    async def put(self, project_id: str, data: bytes) -> str:
        """Store `data`, returning its Weave digest; storing the same bytes twice is a no-op."""
        ...

    def stage(self, project_id: str) -> StagedFile:
        """A temp file to write an image of `project_id` into (then `put_staged` it, or
        discard it)."""
        ...

    async def put_staged(self, project_id: str, staged: StagedFile) -> str:
        """Store what was written to `staged` (its temp file is gone afterwards, stored or
        not), returning its Weave digest."""
        ...

    async def get(self, project_id: str, digest: str) -> bytes | None: ...

    async def chunks(
        self, project_id: str, digest: str, chunk_size: int
    ) -> AsyncIterator[bytes] | None:
        """A file's bytes in chunks (of about `chunk_size`), or None if there is no such
        file. Opened now; read as the iterator is."""
        ...

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

    def stage(self, project_id: str) -> StagedFile:
        # In the project's own directory, so committing is a rename on the same disk.
        entity, project = split_project_id(project_id)
        try:
            return StagedFile(self.root / entity / project)
        except OSError as exc:
            raise StorageError(f"staging a file for {project_id}: {exc!r}") from exc

    async def put_staged(self, project_id: str, staged: StagedFile) -> str:
        digest = staged.digest
        path = self._path(project_id, digest)
        try:
            await asyncio.to_thread(self._commit, staged, path)
        except OSError as exc:
            raise StorageError(f"writing {path}: {exc!r}") from exc
        finally:
            staged.discard()  # a no-op once renamed
        return digest

    @staticmethod
    def _commit(staged: StagedFile, path: Path) -> None:
        staged.sync()
        if path.exists():
            return  # same digest, same bytes (the temp file is discarded)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.replace(staged.path, path)

    async def get(self, project_id: str, digest: str) -> bytes | None:
        path = self._path(project_id, digest)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"reading {path}: {exc!r}") from exc

    async def chunks(
        self, project_id: str, digest: str, chunk_size: int
    ) -> AsyncIterator[bytes] | None:
        path = self._path(project_id, digest)
        try:
            file = await asyncio.to_thread(path.open, "rb")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"reading {path}: {exc!r}") from exc

        async def read() -> AsyncIterator[bytes]:
            with file:
                while chunk := await asyncio.to_thread(file.read, chunk_size):
                    yield chunk

        return read()

    async def exists(self, project_id: str, digest: str) -> bool:
        return await asyncio.to_thread(self._path(project_id, digest).is_file)

    async def delete(self, project_id: str, digest: str) -> None:
        path = self._path(project_id, digest)
        try:
            await asyncio.to_thread(path.unlink, missing_ok=True)
        except OSError as exc:
            raise StorageError(f"deleting {path}: {exc!r}") from exc

    async def ping(self) -> None:
        try:
            await asyncio.to_thread(self._check_writable)
        except OSError as exc:
            raise StorageError(f"file store {self.root}: {exc!r}") from exc

    def _check_writable(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise PermissionError(f"file store {self.root} is not writable")

    async def remove_temp_files(self, older_than_s: float | None = None) -> int:
        """Delete the temp files a process killed mid-write left behind (only those
        older than `older_than_s`, when given); how many. Readers never open them."""
        return await asyncio.to_thread(self._remove_temp_files, older_than_s)

    def _remove_temp_files(self, older_than_s: float | None) -> int:
        # Whole files being written sit beside their digest's directory; images being
        # decoded from a provider's answer, in the project's directory.
        temps = [*self.root.glob(f"*/*/*/{TEMP_PREFIX}*"), *self.root.glob(f"*/*/{TEMP_PREFIX}*")]
        return remove_stale(temps, older_than_s)

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
