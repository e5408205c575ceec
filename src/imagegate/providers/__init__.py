"""Image providers: one protocol (`base.Provider`), one module per backend."""

from imagegate.errors import ProviderError
from imagegate.providers.base import (
    GeneratedImage,
    ImageRequest,
    Provider,
    ProviderResult,
)
from imagegate.providers.catalog import Catalog, ModelSpec, load_catalog

__all__ = [
    "Catalog",
    "GeneratedImage",
    "ImageRequest",
    "ModelSpec",
    "Provider",
    "ProviderError",
    "ProviderResult",
    "load_catalog",
]
