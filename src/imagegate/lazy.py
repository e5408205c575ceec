"""Modules imported on first use, not at start-up (cold start: `openai` alone takes about
a second to import, alembic a few hundred milliseconds, and most requests need neither)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
from types import ModuleType
from typing import Any


class _LazyModule:
    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attr: str) -> Any:
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attr)


def lazy_module(name: str) -> Any:
    """A stand-in for `import name` whose attributes import the module when first read."""
    return _LazyModule(name)


def preload(*names: str) -> asyncio.Task[None]:
    """Import `names` in a thread, in the background: a server is ready without them,
    and its first request that needs one seldom waits for the import."""

    def load() -> None:
        for name in names:
            try:
                importlib.import_module(name)
            except ImportError:  # an optional extra that is not installed
                logging.getLogger("imagegate").debug("not preloading %s", name)

    async def run() -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.to_thread(load)

    return asyncio.get_running_loop().create_task(run(), name="imagegate-preload")
