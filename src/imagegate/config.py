"""Settings, from arguments or `IMAGEGATE_*` environment variables."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from imagegate.httpserver import HttpLimits

MiB = 1024 * 1024


def default_data_dir() -> Path:
    return Path(os.environ.get("IMAGEGATE_DATA_DIR", "imagegate-data"))


@dataclass(frozen=True)
class Settings:
    data_dir: Path = field(default_factory=default_data_dir)
    # Defaults to SQLite inside data_dir.
    database_url: str | None = None
    # Where image files go: `file:///path` or `s3://bucket/prefix`; defaults to data_dir/files.
    files_url: str | None = None
    # JSON bodies are small (a prompt is at most 32,000 characters): anything far larger
    # is refused before it is read.
    max_request_bytes: int = 4 * MiB
    max_upload_bytes: int = 64 * MiB
    # Images with more pixels are never decoded (thumbnails are refused with a 422).
    max_image_pixels: int = 4096 * 4096
    # Base of the image URLs handed out for `response_format: "url"`. Without it, a
    # request's own origin is used only if its Host is in `allowed_hosts`; otherwise
    # URLs are relative ("/files/..."): a Host header alone never decides a URL.
    public_url: str | None = None
    allowed_hosts: frozenset[str] = frozenset()
    # Signed image URLs stay the same for windows of this many seconds, and work for
    # at least this long (at most twice).
    url_ttl: int = 7 * 24 * 3600
    # An operator's model catalog, layered over the packaged one.
    models_file: Path | None = None
    # Seconds to wait for a new database connection before answering 503 (the database
    # is down), and for a pooled one while all are in use (it is busy: wait in turn).
    database_timeout: float = 5.0
    database_queue_timeout: float = 120.0
    # Concurrent reads (/calls/stream_query, /calls/query_stats, /call/read) per API
    # key; more wait up to `read_wait` seconds for a turn, then get 429.
    reads_per_key: int = 8
    read_wait: float = 30.0
    # Idempotency keys: kept this long (seconds) after first use; a repeat that arrives
    # while the first request runs waits up to `idempotency_wait` for it, then gets 409;
    # a replica that holds a key must renew its lease within `idempotency_lease`, so a
    # crashed one blocks its key only that long.
    # HTTP server limits (see httpserver.py): header size (431 past it), seconds for
    # headers to arrive, longest pause in a body, longest a client may leave an answer
    # unread, idle keep-alive, and open connections.
    http_max_header_bytes: int = 64 * 1024
    http_header_timeout: float = 10.0
    http_body_timeout: float = 30.0
    http_send_timeout: float = 60.0
    http_keep_alive_timeout: float = 5.0
    http_max_connections: int = 2048
    idempotency_ttl: float = 24 * 3600.0
    idempotency_wait: float = 30.0
    idempotency_lease: float = 30.0

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        env = os.environ
        values: dict[str, object] = {
            "data_dir": default_data_dir(),
            "database_url": env.get("IMAGEGATE_DATABASE_URL") or None,
            "files_url": env.get("IMAGEGATE_FILES_URL") or None,
            "public_url": env.get("IMAGEGATE_PUBLIC_URL") or None,
            "allowed_hosts": frozenset(
                h.strip().lower()
                for h in env.get("IMAGEGATE_ALLOWED_HOSTS", "").split(",")
                if h.strip()
            ),
            "models_file": Path(env["IMAGEGATE_MODELS"]) if env.get("IMAGEGATE_MODELS") else None,
        }
        for name in (
            "max_request_bytes",
            "max_upload_bytes",
            "reads_per_key",
            "max_image_pixels",
            "url_ttl",
            "http_max_header_bytes",
            "http_max_connections",
        ):
            raw = env.get(f"IMAGEGATE_{name.upper()}")
            if raw:
                values[name] = int(raw)
        for name in (
            "database_timeout",
            "database_queue_timeout",
            "read_wait",
            "http_header_timeout",
            "http_body_timeout",
            "http_send_timeout",
            "http_keep_alive_timeout",
            "idempotency_ttl",
            "idempotency_wait",
            "idempotency_lease",
        ):
            raw = env.get(f"IMAGEGATE_{name.upper()}")
            if raw:
                values[name] = float(raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        values["data_dir"] = Path(str(values["data_dir"]))
        return cls(**values)  # type: ignore[arg-type]

    def http_limits(self) -> HttpLimits:
        return HttpLimits(
            max_header_bytes=self.http_max_header_bytes,
            header_timeout=self.http_header_timeout,
            body_timeout=self.http_body_timeout,
            send_timeout=self.http_send_timeout,
            keep_alive_timeout=self.http_keep_alive_timeout,
            max_connections=self.http_max_connections,
        )

    @property
    def resolved_database_url(self) -> str:
        return (
            self.database_url or f"sqlite+aiosqlite:///{self.data_dir.resolve() / 'imagegate.db'}"
        )

    @property
    def files_dir(self) -> Path:
        return self.data_dir / "files"

    def root_secret(self) -> bytes:
        """`IMAGEGATE_SECRET_KEY`, else a secret kept in data_dir (made on first use)."""
        if env_key := os.environ.get("IMAGEGATE_SECRET_KEY"):
            return env_key.encode()
        path = self.data_dir / "secret.key"
        if not path.exists():
            self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            # Created 0600 from the start: never readable by others, not even briefly.
            fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(32))
            # Another process may have won the race: link-or-keep keeps one key for all.
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
        return path.read_text().strip().encode()

    def signing_key(self) -> bytes:
        """The key that signs image URLs, sessions and CSRF tokens:
        `IMAGEGATE_SIGNING_KEY`, else one derived from the root secret. Rotating it
        revokes every signed URL and session, and touches no encrypted secret."""
        if env_key := os.environ.get("IMAGEGATE_SIGNING_KEY"):
            return env_key.encode()
        return hmac.new(self.root_secret(), b"imagegate signing", hashlib.sha256).digest()

    def encryption_keys(self) -> list[bytes]:
        """The key ring for stored secrets: `IMAGEGATE_ENCRYPTION_KEYS` (comma-separated;
        the first encrypts, every one decrypts), else the root secret alone."""
        ring = [k.strip() for k in os.environ.get("IMAGEGATE_ENCRYPTION_KEYS", "").split(",")]
        return [k.encode() for k in ring if k] or [self.root_secret()]
