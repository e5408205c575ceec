"""Real servers for the scale-out backends, started by the tests themselves.

- `PgCluster`: a throwaway PostgreSQL 15 cluster (Debian's binaries, `initdb` in a temp
  dir, loopback only). PostgreSQL refuses to run as root, so as root the cluster runs as
  the `postgres` system user the Debian package creates.
- `S3Server`: moto's S3-compatible server in its own process, on loopback.

Also used by bench/replicas.py, so nothing here depends on pytest.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path

import httpx
import obstore

from imagegate.config import Settings
from imagegate.core import open_file_store
from imagegate.store import LocalFileStore
from imagegate.store.objectstore import ObjectFileStore

PG_BIN = Path(os.environ.get("IMAGEGATE_PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_USER = "postgres"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_as() -> str | None:
    return PG_USER if os.geteuid() == 0 else None


@dataclass
class PgCluster:
    root: Path
    port: int = field(default_factory=free_port)

    @classmethod
    def create(cls) -> PgCluster:
        if not (PG_BIN / "initdb").exists():
            raise RuntimeError(f"{PG_BIN}/initdb is missing: run scripts/deps/postgresql.sh")
        # Not pytest's tmp_path: that is private to root, and the server may be `postgres`.
        root = Path(tempfile.mkdtemp(prefix="imagegate-pg-"))
        if (user := _run_as()) is not None:
            entry = pwd.getpwnam(user)
            os.chown(root, entry.pw_uid, entry.pw_gid)
        cluster = cls(root)
        cluster._pg("initdb", "-D", "data", "-U", "postgres", "--auth=trust", "-E", "UTF8",
                    "--locale=C.UTF-8", "--no-sync")  # fmt: skip
        cluster.start()
        return cluster

    def _pg(self, tool: str, *args: str) -> None:
        res = subprocess.run(
            [str(PG_BIN / tool), *args],
            cwd=self.root,
            user=_run_as(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        if res.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text()[-3000:] if log.exists() else ""
            raise RuntimeError(f"{tool} failed: {res.stdout}{res.stderr}{tail}")

    def start(self) -> None:
        # Durability off: a test cluster lives for one run, and this halves its time.
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=400"
        )
        self._pg("pg_ctl", "-D", "data", "-l", "server.log", "-w", "-t", "60", "-o", options,
                 "start")  # fmt: skip

    def stop(self) -> None:
        self._pg("pg_ctl", "-D", "data", "-m", "fast", "-w", "stop")

    def destroy(self) -> None:
        try:
            self._pg("pg_ctl", "-D", "data", "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str, driver: str = "postgresql+asyncpg") -> str:
        return f"{driver}://postgres@127.0.0.1:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        res = subprocess.run(
            [str(PG_BIN / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
             "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", database,
             "-c", sql],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        if res.returncode != 0:
            raise RuntimeError(f"psql failed: {res.stderr}")
        return res.stdout

    def create_database(self) -> str:
        name = "t_" + uuid.uuid4().hex[:16]
        self.psql(f"CREATE DATABASE {name} STRATEGY = FILE_COPY")  # faster for tiny DBs
        return name

    def drop_database(self, name: str) -> None:
        self.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def dump(self, database: str) -> bytes:
        """`pg_dump` of one database: what a backup would hold."""
        return subprocess.run(
            [str(PG_BIN / "pg_dump"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
             database],
            capture_output=True, check=True, timeout=60,
        ).stdout  # fmt: skip


@dataclass
class S3Server:
    process: subprocess.Popen[bytes]
    endpoint: str
    bucket: str = "imagegate-test"

    @classmethod
    def start(cls, log: Path) -> S3Server:
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        server = cls(proc, f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError("moto server exited:\n" + log.read_text())
            try:
                # moto does not check signatures, so a plain PUT creates the bucket.
                if httpx.put(f"{server.endpoint}/{server.bucket}", timeout=2).is_success:
                    return server
            except httpx.HTTPError:
                time.sleep(0.1)
        proc.kill()
        raise RuntimeError("moto server did not start:\n" + log.read_text())

    def env(self) -> dict[str, str]:
        """The usual AWS settings, pointing at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
        }

    def files_url(self, prefix: str | None = None) -> str:
        return f"s3://{self.bucket}/{prefix or uuid.uuid4().hex[:16]}"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


async def stored_files(settings: Settings, project_id: str | None = None) -> dict[str, bytes]:
    """Every file in the settings' file store (only `project_id`'s when given), by key
    relative to the store's root: `<entity>/<project>/<2 chars>/<digest>`."""
    store = open_file_store(settings)
    prefix = f"{project_id}/" if project_id else ""
    if isinstance(store, LocalFileStore):
        found = {}
        for path in store.root.rglob("*") if store.root.exists() else []:
            key = path.relative_to(store.root).as_posix()
            if path.is_file() and key.startswith(prefix):
                found[key] = path.read_bytes()
        return found
    assert isinstance(store, ObjectFileStore)
    found = {}
    async for chunk in obstore.list(store.store, prefix=prefix or None):
        for meta in chunk:
            result = await obstore.get_async(store.store, meta["path"])
            found[meta["path"]] = bytes(await result.bytes_async())
    return found


def failing_file_store(settings: Settings, project_id: str) -> Settings:
    """Settings whose file store really refuses `project_id`'s writes: on disk a plain file
    stands where the project's directory must go (which fails even as root); an object
    store's endpoint is one where no server listens (a stopped S3 server)."""
    if not settings.files_url:
        entity, project = project_id.split("/")
        (settings.files_dir / entity).mkdir(parents=True, exist_ok=True)
        (settings.files_dir / entity / project).write_text("in the way")
        return settings
    return replace(settings, s3_endpoint=f"http://127.0.0.1:{free_port()}")
