"""The application object: one place that owns settings, stores, catalog and providers."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from imagegate.admin import Admin
from imagegate.config import Settings
from imagegate.idempotency import IdempotencyStore
from imagegate.limits import KeyedLimiter
from imagegate.metrics import Metrics
from imagegate.providers import Catalog, Provider, load_catalog
from imagegate.providers import litellm as litellm_provider
from imagegate.providers.local import ProceduralProvider
from imagegate.providers.openai import OpenAIProvider
from imagegate.service import GenerationService
from imagegate.store import AccountStore, CallStore, FileStore, LocalFileStore
from imagegate.store.budgets import BudgetStore
from imagegate.store.db import advisory_lock, create_engine, migrate
from imagegate.store.ratelimit import Limits, RateLimiter
from imagegate.store.secrets import SecretStore
from imagegate.store.sessions import SessionStore
from imagegate.store.teams import TeamStore
from imagegate.traces import Traces


def default_providers() -> dict[str, Provider]:
    providers: dict[str, Provider] = {
        "procedural": ProceduralProvider(),
        "openai": OpenAIProvider(),
        "azure": OpenAIProvider(azure=True),
    }
    if litellm_provider.available():  # the optional `litellm` extra
        providers["litellm"] = litellm_provider.LiteLLMProvider()
    return providers


def open_file_store(settings: Settings) -> FileStore:
    """The file store `settings.files_url` names: `file:///path` or `s3://bucket/prefix`;
    without one, files under the data dir."""
    url = settings.files_url
    if not url:
        return LocalFileStore(settings.files_dir)
    parts = urlsplit(url)
    if parts.scheme == "file":  # one of the two forms Settings allows (store_urls.py)
        return LocalFileStore(Path(unquote(parts.path)))
    from imagegate.store.objectstore import ObjectFileStore  # needs obstore

    return ObjectFileStore.from_url(
        url,
        settings.environ,
        endpoint=settings.s3_endpoint,
        allow_http=settings.s3_allow_http,
        # Images being decoded wait here, on local disk, for their upload.
        staging_dir=settings.data_dir / "staging",
    )


class Imagegate:
    """Everything a request needs, built once per process from Settings.

    `providers` maps a catalog entry's `provider` name to its implementation: the one
    seam for adding a backend (or, in tests, one that misbehaves on purpose).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        providers: dict[str, Provider] | None = None,
        catalog: Catalog | None = None,
        files: FileStore | None = None,
    ) -> None:
        self.settings = settings
        self.engine = create_engine(
            settings.resolved_database_url,
            timeout=settings.database_timeout,
            queue_timeout=settings.database_queue_timeout,
            max_waiters=settings.database_max_waiters,
        )
        self.accounts = AccountStore(self.engine, cache_ttl=settings.access_cache_ttl)
        self.calls = CallStore(self.engine)
        self.sessions = SessionStore(self.engine)
        self.files = files or open_file_store(settings)
        self.catalog = catalog or load_catalog(settings.models_file)
        self.signing_key = settings.signing_key()
        self.secrets = SecretStore(
            self.engine, settings.encryption_keys(), cache_ttl=settings.access_cache_ttl
        )
        self.providers = {**default_providers(), **(providers or {})}
        self.metrics = Metrics(self.catalog.names)
        self.teams = TeamStore(self.engine, on_change=self.accounts.changed)
        self.budgets = BudgetStore(self.engine, cache_ttl=settings.access_cache_ttl)
        limits = Limits(
            key_requests=settings.rate_limit_key_requests,
            key_images=settings.rate_limit_key_images,
            project_requests=settings.rate_limit_project_requests,
            project_images=settings.rate_limit_project_images,
        )
        for scope in ("key", "project"):
            for kind in ("requests", "images"):
                self.metrics.rate_limit.labels(scope, kind).set(getattr(limits, f"{scope}_{kind}"))
        self.rate_limiter = RateLimiter(self.engine, limits)
        self.generation = GenerationService(
            catalog=self.catalog,
            providers=self.providers,
            calls=self.calls,
            files=self.files,
            accounts=self.accounts,
            secrets=self.secrets,
            signing_key=self.signing_key,
            url_ttl=settings.url_ttl,
            metrics=self.metrics,
            environ=settings.environ,
            budgets=self.budgets,
            rate_limiter=self.rate_limiter,
            allow_unpriced_under_budget=settings.budget_allow_unpriced,
        )

        self.admin = Admin(self.accounts, self.teams, self.budgets, self.secrets)
        self.reads = KeyedLimiter(settings.reads_per_key, settings.read_wait)
        self.idempotency = IdempotencyStore(
            self.engine,
            ttl=settings.idempotency_ttl,
            wait=settings.idempotency_wait,
            lease=settings.idempotency_lease,
        )
        self.traces = Traces(self.engine, self.accounts, self.files, self.idempotency)

    async def start(self) -> None:
        await migrate(self.engine, files=self.files)

    async def close(self) -> None:
        await self.generation.writer.close()
        for provider in self.providers.values():
            if aclose := getattr(provider, "aclose", None):
                await aclose()
        await self.engine.dispose()

    async def bootstrap_admin(self) -> str | None:
        """On a server with no users, create `admin` (entity `admin`); its new key, else None."""
        # Held until the key exists, so replicas starting at once on one PostgreSQL make
        # (and print) one admin key between them.
        async with self.engine.begin() as conn:
            await advisory_lock(conn, "imagegate:bootstrap")
            if await self.accounts.user_count():
                return None
            return await self.accounts.create_key("admin", "admin", is_admin=True)
