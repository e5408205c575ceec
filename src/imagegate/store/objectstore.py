"""The object-storage file store: S3 and S3-compatible servers, through `obstore`.

Same layout and guarantees as LocalFileStore: objects are content-addressed by Weave's
digest under `<prefix>/<entity>/<project>/<2 chars>/<digest>`, scoped per project, and
an S3 PUT is atomic (an object becomes visible only when complete), so no reader ever
sees a partial image.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import obstore
from obstore.exceptions import BaseError
from obstore.store import S3Store

from imagegate.digest import is_digest, weave_digest
from imagegate.errors import StorageError
from imagegate.names import split_project_id


class ObjectStoreError(StorageError):
    """A failed object-store request (obstore's errors, mapped where they enter)."""


def _endpoint(env: Mapping[str, str]) -> str | None:
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        if env.get(name):
            return env[name]
    return None


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def s3_store(
    url: str, env: Mapping[str, str], *, endpoint: str | None = None, allow_http: bool = False
) -> S3Store:
    """An S3Store for `s3://bucket/prefix`, configured from the usual AWS settings.

    Endpoint: `endpoint` (the s3_endpoint setting), else AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL (for
    MinIO, Ceph, R2, ...). Region: AWS_REGION / AWS_DEFAULT_REGION. Credentials:
    AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, else whatever the
    environment provides (instance roles, web identity). Plain http is allowed only for
    a loopback endpoint, or with `allow_http` (the s3_allow_http setting).
    """
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError(f"not an s3://bucket/prefix URL: {url!r}")
    config: dict[str, Any] = {}
    endpoint = endpoint or _endpoint(env)
    if endpoint:
        # The store also reads AWS_ENDPOINT_URL_S3 from the process environment, and that
        # key wins over `endpoint`: set both, so the endpoint chosen above is the one used.
        config["endpoint"] = endpoint
        config["aws_endpoint_url_s3"] = endpoint
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if region:
        config["region"] = region
    for name in ("access_key_id", "secret_access_key", "session_token"):
        if value := env.get(f"AWS_{name.upper()}"):
            config[name] = value
    allow_http = allow_http or (
        endpoint is not None and endpoint.startswith("http://") and _is_loopback(endpoint)
    )
    return S3Store(
        parts.netloc,
        prefix=parts.path.strip("/") or None,
        config=config,  # type: ignore[arg-type]
        client_options={"allow_http": allow_http, "connect_timeout": "5s", "timeout": "60s"},
        # A few quick retries: an outage should become a recorded storage error within
        # seconds, not after the library's default of minutes.
        retry_config={"max_retries": 3, "retry_timeout": timedelta(seconds=20)},
    )


class ObjectFileStore:
    """Bytes by (project, digest) in an object store."""

    def __init__(self, store: Any) -> None:
        self.store = store

    @classmethod
    def from_url(
        cls,
        url: str,
        env: Mapping[str, str],
        *,
        endpoint: str | None = None,
        allow_http: bool = False,
    ) -> ObjectFileStore:
        return cls(s3_store(url, env, endpoint=endpoint, allow_http=allow_http))

    @staticmethod
    def _key(project_id: str, digest: str) -> str:
        entity, project = split_project_id(project_id)
        if not is_digest(digest):
            raise ValueError(f"not a digest: {digest!r}")
        return f"{entity}/{project}/{digest[:2]}/{digest}"

    async def put(self, project_id: str, data: bytes) -> str:
        digest = weave_digest(data)
        key = self._key(project_id, digest)
        try:
            # Overwriting with identical bytes is harmless, and one request is cheaper
            # than a HEAD first: most images are new.
            await obstore.put_async(self.store, key, data)
        except (BaseError, FileNotFoundError) as exc:
            raise ObjectStoreError(f"storing {key}: {exc}") from exc
        return digest

    async def get(self, project_id: str, digest: str) -> bytes | None:
        key = self._key(project_id, digest)
        try:
            result = await obstore.get_async(self.store, key)
            return bytes(await result.bytes_async())
        except FileNotFoundError:  # obstore's NotFoundError is one
            return None
        except BaseError as exc:
            raise ObjectStoreError(f"reading {key}: {exc}") from exc

    async def exists(self, project_id: str, digest: str) -> bool:
        key = self._key(project_id, digest)
        try:
            await obstore.head_async(self.store, key)
        except FileNotFoundError:
            return False
        except BaseError as exc:
            raise ObjectStoreError(f"checking {key}: {exc}") from exc
        return True

    async def delete(self, project_id: str, digest: str) -> None:
        key = self._key(project_id, digest)
        try:
            await obstore.delete_async(self.store, key)
        except FileNotFoundError:
            pass  # already gone
        except BaseError as exc:
            raise ObjectStoreError(f"deleting {key}: {exc}") from exc

    async def ping(self) -> None:
        """Raise unless the bucket answers (one small LIST request)."""
        try:
            await obstore.list_with_delimiter_async(self.store)
        except (BaseError, FileNotFoundError) as exc:
            raise ObjectStoreError(f"object store unavailable: {exc}") from exc
