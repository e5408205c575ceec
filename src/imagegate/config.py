"""Settings: the one registry of everything an operator can set.

Every setting is one field of `Settings`, declared once with its default, its help text
and its environment variable (`IMAGEGATE_<NAME>` unless named otherwise). The CLI's
flags, `Settings.from_env` and the README's settings table all come from that one list
(`SETTINGS`; `tests/test_settings.py` checks the README). This is the only module that
reads the process environment: everything else gets what it needs from a `Settings`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import os
import secrets
import sys
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imagegate.httpserver import HttpLimits
from imagegate.store_urls import (
    DATABASE_URL_FORMS,
    FILES_URL_FORMS,
    check_database_url,
    check_files_url,
)

MiB = 1024 * 1024

APP_NAME = "imagegate"


def malloc_arenas_set(env: Mapping[str, str] | None = None) -> bool:
    """Whether the environment sets glibc's malloc arena count (MALLOC_ARENA_MAX, not
    imagegate's setting): a server process then leaves it as it is."""
    return "MALLOC_ARENA_MAX" in (os.environ if env is None else env)


def user_data_dir(env: Mapping[str, str] | None = None) -> Path:
    """The platform's per-user data directory for imagegate: the same for every command,
    whatever directory it runs from (`$XDG_DATA_HOME/imagegate`, else
    `~/.local/share/imagegate` on Linux; `~/Library/Application Support/imagegate` on
    macOS; `%LOCALAPPDATA%\\imagegate` on Windows)."""
    env = os.environ if env is None else env
    home = Path(env.get("HOME") or Path.home())
    if sys.platform == "win32":
        base = env.get("LOCALAPPDATA") or str(home / "AppData" / "Local")
        return Path(base) / APP_NAME
    if sys.platform == "darwin":
        return home / "Library" / "Application Support" / APP_NAME
    xdg = env.get("XDG_DATA_HOME", "")
    # The XDG spec: a relative value is invalid and must be ignored.
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else home / ".local" / "share"
    return base / APP_NAME


def setting(
    default: Any = None,
    *,
    help: str,
    env: str | None = None,
    flag: str | None = None,
    group: str = "serve",
    default_factory: Callable[[], Any] | None = None,
    shown_default: str | None = None,
    secret: bool = False,
) -> Any:
    """A `Settings` field with what the registry needs to know about it.

    `group` is "store" for what every command that opens the database takes (`serve`
    and the management commands), "serve" for the server's own.
    """
    meta = {
        "help": help,
        "env": env,
        "flag": flag,
        "group": group,
        "shown_default": shown_default,
        "secret": secret,
    }
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Settings:
    data_dir: Path = setting(
        default_factory=user_data_dir,
        group="store",
        shown_default="the user data dir: `$XDG_DATA_HOME/imagegate`, `~/.local/share/imagegate`",
        help="Where the SQLite database, image files and the generated secret live.",
    )
    database_url: str | None = setting(
        group="store",
        shown_default="SQLite in the data dir",
        help=f"{DATABASE_URL_FORMS}.",
    )
    files_url: str | None = setting(
        group="store",
        shown_default="`<data-dir>/files`",
        help=f"Where image files go: {FILES_URL_FORMS}.",
    )
    models_file: Path | None = setting(
        env="IMAGEGATE_MODELS",
        flag="--models",
        group="store",
        help="An operator's model catalog (TOML), layered over the packaged one.",
    )
    secret_key: str | None = setting(
        group="store",
        secret=True,
        shown_default="one generated into the data dir",
        help="The root secret: the signing and encryption keys derive from it unless set; the "
        "same on every replica.",
    )
    s3_endpoint: str | None = setting(
        group="store",
        shown_default="`AWS_ENDPOINT_URL_S3`, else `AWS_ENDPOINT_URL`, else AWS",
        help="The S3 server for an `s3://` files URL (MinIO, Ceph, R2, ...).",
    )
    s3_allow_http: bool = setting(
        False,
        group="store",
        help="Allow a plain `http://` S3 endpoint that is not on loopback.",
    )
    database_timeout: float = setting(
        5.0, group="store", help="Seconds to get a database connection before answering 503."
    )
    public_url: str | None = setting(
        shown_default="unset: the request's origin if its Host is an allowed host, else "
        "relative URLs (`/files/…`)",
        help="Base of image URLs handed out; a Host header alone never decides a URL.",
    )
    # JSON bodies are small (a prompt is at most 32,000 characters): anything far larger
    # is refused before it is read.
    max_request_bytes: int = setting(
        4 * MiB, help="Larger JSON bodies get 413 before they are read."
    )
    max_upload_bytes: int = setting(64 * MiB, help="Largest `/file/create` upload.")
    max_image_pixels: int = setting(
        4096 * 4096, help="Images with more pixels are never decoded (thumbnails get 422)."
    )
    # Without public_url, a request's own origin is used only if its Host is listed;
    # otherwise URLs are relative ("/files/..."): a Host header alone never decides a URL.
    allowed_hosts: frozenset[str] = setting(
        default_factory=frozenset,
        shown_default="none: image URLs are relative without `--public-url`",
        help="Comma-separated hosts whose own origin may be the base of image URLs.",
    )
    url_ttl: int = setting(
        7 * 24 * 3600,
        help="Seconds a signed image URL works for at least (at most twice); it stays the "
        "same within such a window.",
    )
    signing_secret: str | None = setting(
        env="IMAGEGATE_SIGNING_KEY",
        group="store",
        secret=True,
        shown_default="derived from the secret key",
        help="Signs image URLs, sessions and CSRF tokens; rotating it revokes them all and "
        "touches no encrypted secret.",
    )
    encryption_key_ring: str | None = setting(
        env="IMAGEGATE_ENCRYPTION_KEYS",
        group="store",
        secret=True,
        shown_default="the secret key alone",
        help="Comma-separated keys for stored provider keys: the first encrypts, every one "
        "decrypts (`imagegate secrets reencrypt` moves all to the first).",
    )
    database_queue_timeout: float = setting(
        120.0,
        group="store",
        help="Seconds to wait for a pooled database connection while all are in use.",
    )
    database_max_waiters: int = setting(
        2000,
        group="store",
        help="Requests that may wait for a pooled database connection at once; more get "
        "503 with Retry-After (busy is not down: below this they wait).",
    )
    workers: int = setting(
        0,
        help="Worker processes serving requests (0: one per CPU core this process may use).",
    )
    # A revoked key must be refused on every replica within a second: keep this below 1.
    access_cache_ttl: float = setting(
        0.5,
        help="Seconds an API key's caller (teams, roles), a team's provider keys and the "
        "budgets over a project may be answered from memory; changes reach every replica "
        "within it (0: no cache).",
    )
    reads_per_key: int = setting(
        8,
        help="Concurrent reads (/calls/stream_query, /calls/query_stats, /call/read) per API "
        "key; more wait their turn.",
    )
    read_wait: float = setting(
        30.0, help="Seconds a read waits for a turn (see reads per key), then 429."
    )
    # HTTP server limits (see httpserver.py).
    http_max_header_bytes: int = setting(
        64 * 1024, help="Largest request head in bytes (431 past it)."
    )
    http_header_timeout: float = setting(10.0, help="Seconds for a request's headers to arrive.")
    http_body_timeout: float = setting(30.0, help="Longest pause in a request body, in seconds.")
    http_send_timeout: float = setting(
        60.0, help="Longest a client may leave an answer unread, in seconds."
    )
    http_keep_alive_timeout: float = setting(
        5.0, help="Seconds an idle keep-alive connection stays open."
    )
    http_max_connections: int = setting(2048, help="Open connections at most, per worker process.")
    idempotency_ttl: float = setting(
        24 * 3600.0, help="Seconds an Idempotency-Key is kept after first use."
    )
    idempotency_wait: float = setting(
        30.0, help="Seconds a repeat waits for the first request with its key, then 409."
    )
    idempotency_lease: float = setting(
        30.0, help="Seconds after which a key held by a replica that died is free again."
    )
    metrics_token: str | None = setting(
        secret=True,
        shown_default="unset: `/metrics` is open",
        help="When set, `/metrics` needs `Authorization: Bearer <token>`.",
    )
    # Must exceed the longest generation (timeout x attempts plus retry waits): in the
    # packaged catalog, 1200 s (2.5's xhigh/max) x 3 attempts and two waits of 30 s.
    stale_call_after: float = setting(
        65 * 60.0,
        help="Seconds after which an unfinished call is taken as orphaned by a crash.",
    )
    # Below the idle timeout of any proxy in front (often 60 s); see imagegate.keepalive.
    keepalive_interval: float = setting(
        15.0,
        help="Seconds of silence before a long generation's answer sends a keep-alive "
        "(see Long generations).",
    )
    recovery_interval: float = setting(
        60.0, help="Seconds between sweeps for orphaned calls while serving (0: start-up only)."
    )
    budget_allow_unpriced: bool = setting(
        False,
        help="Whether models without a price may be used in a project or team with a budget.",
    )
    rate_limit_key_requests: int = setting(
        0, help="Generation requests per minute per API key (0: no limit)."
    )
    rate_limit_key_images: int = setting(0, help="Images per minute per API key (0: no limit).")
    rate_limit_project_requests: int = setting(
        0, help="Generation requests per minute per project (0: no limit)."
    )
    rate_limit_project_images: int = setting(0, help="Images per minute per project (0: no limit).")
    # Not a setting of its own: where provider credentials (OPENAI_API_KEY, AWS_*, the
    # `api_key_env` a catalog entry names) are looked up. The live process environment
    # unless a caller passes another mapping.
    environ: Mapping[str, str] = field(
        default_factory=lambda: os.environ, compare=False, repr=False
    )

    def __post_init__(self) -> None:
        for name, check in (("database_url", check_database_url), ("files_url", check_files_url)):
            if value := getattr(self, name):
                try:
                    check(value)
                except ValueError as exc:
                    raise ValueError(f"{SETTING_BY_NAME[name].env}: {exc}") from None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from `IMAGEGATE_*` variables, then `overrides` (None means "not given")."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {"environ": env}
        for item in SETTINGS:
            raw = env.get(item.env, "")
            if raw != "":
                values[item.name] = item.parse(raw)
        for name, value in overrides.items():
            if value is not None:
                values[name] = SETTING_BY_NAME[name].parse(value)
        if "data_dir" not in values:
            values["data_dir"] = user_data_dir(env)
        return cls(**values)

    def worker_count(self) -> int:
        if self.workers > 0:
            return self.workers
        cores = getattr(os, "sched_getaffinity", None)
        return len(cores(0)) if cores else os.cpu_count() or 1

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

    def describe_storage(self) -> str:
        """One line naming where this process keeps its data (no passwords)."""
        from sqlalchemy.engine import make_url

        database = make_url(self.resolved_database_url).render_as_string(hide_password=True)
        files = self.files_url or str(self.files_dir.resolve())
        return f"data dir {self.data_dir.resolve()} (database {database}, files {files})"

    def root_secret(self) -> bytes:
        """`secret_key`, else a secret kept in data_dir (made on first use)."""
        if self.secret_key:
            return self.secret_key.encode()
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
        """The key that signs image URLs, sessions and CSRF tokens: `signing_secret`
        (IMAGEGATE_SIGNING_KEY), else one derived from the root secret. Rotating it
        revokes every signed URL and session, and touches no encrypted secret."""
        if self.signing_secret:
            return self.signing_secret.encode()
        return hmac.new(self.root_secret(), b"imagegate signing", hashlib.sha256).digest()

    def encryption_keys(self) -> list[bytes]:
        """The key ring for stored secrets: `encryption_key_ring` (IMAGEGATE_ENCRYPTION_KEYS,
        comma-separated; the first encrypts, every one decrypts), else the root secret."""
        ring = [k.strip() for k in (self.encryption_key_ring or "").split(",")]
        return [k.encode() for k in ring if k] or [self.root_secret()]


@dataclass(frozen=True)
class SettingInfo:
    """One entry of the registry, read from a `Settings` field."""

    name: str
    type: type
    optional: bool
    default: Any
    help: str
    env: str
    flag: str
    group: str
    shown_default: str | None
    secret: bool

    def parse(self, raw: Any) -> Any:
        """A value of this setting's type from text (an environment variable, a flag)."""
        if not isinstance(raw, str):
            return raw
        if self.type is frozenset:  # a comma-separated list, compared in lower case
            return frozenset(part.strip().lower() for part in raw.split(",") if part.strip())
        if self.type is bool:
            lowered = raw.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"{self.env}: expected true or false, got {raw!r}")
        try:
            return self.type(raw)
        except ValueError as exc:
            raise ValueError(f"{self.env}: expected {self.type.__name__}, got {raw!r}") from exc

    @property
    def default_text(self) -> str:
        if self.shown_default is not None:
            return self.shown_default
        if self.default is None:
            return "unset"
        if self.type is int and self.default >= MiB and self.default % MiB == 0:
            return f"{self.default // MiB} MiB"
        return str(self.default).lower() if self.type is bool else str(self.default)


def _registry() -> tuple[SettingInfo, ...]:
    hints = typing.get_type_hints(Settings)
    items = []
    for f in dataclasses.fields(Settings):
        if "help" not in f.metadata:
            continue
        hint = hints[f.name]
        if typing.get_origin(hint) is frozenset:
            optional, kind = False, frozenset
        else:
            args = [a for a in typing.get_args(hint) if a is not type(None)]
            optional = bool(args)
            kind = args[0] if args else hint
        default = None if f.default is dataclasses.MISSING else f.default
        items.append(
            SettingInfo(
                name=f.name,
                type=kind,
                optional=optional,
                default=default,
                help=f.metadata["help"],
                env=f.metadata["env"] or f"IMAGEGATE_{f.name.upper()}",
                flag=f.metadata["flag"] or "--" + f.name.replace("_", "-"),
                group=f.metadata["group"],
                shown_default=f.metadata["shown_default"],
                secret=f.metadata["secret"],
            )
        )
    return tuple(items)


SETTINGS: tuple[SettingInfo, ...] = _registry()
SETTING_BY_NAME = {item.name: item for item in SETTINGS}
