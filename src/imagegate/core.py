"""The application object: one place that owns settings, stores, catalog and providers."""

from __future__ import annotations

from imagegate.config import Settings
from imagegate.providers import Catalog, Provider, load_catalog
from imagegate.providers.local import ProceduralProvider
from imagegate.service import GenerationService
from imagegate.store import AccountStore, CallStore, LocalFileStore
from imagegate.store.db import create_engine, migrate


def default_providers() -> dict[str, Provider]:
    return {"procedural": ProceduralProvider()}


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
    ) -> None:
        self.settings = settings
        self.engine = create_engine(settings.resolved_database_url)
        self.accounts = AccountStore(self.engine)
        self.calls = CallStore(self.engine)
        self.files = LocalFileStore(settings.files_dir)
        self.catalog = catalog or load_catalog(settings.models_file)
        self.signing_key = settings.signing_key()
        self.generation = GenerationService(
            catalog=self.catalog,
            providers={**default_providers(), **(providers or {})},
            calls=self.calls,
            files=self.files,
            accounts=self.accounts,
            signing_key=self.signing_key,
        )

    async def start(self) -> None:
        await migrate(self.engine)

    async def close(self) -> None:
        await self.engine.dispose()

    async def bootstrap_admin(self) -> str | None:
        """On a server with no users, create `admin` (entity `admin`); its new key, else None."""
        if await self.accounts.user_count():
            return None
        return await self.accounts.create_key("admin", "admin")
