"""Modules imported on first use, not at start-up (cold start: `openai` alone takes about
a second to import, alembic a few hundred milliseconds, and most requests need neither)."""

from __future__ import annotations

import importlib
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
