"""The provider protocol: what the generation service asks of every image backend."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class ImageRequest:
    """Validated, effective parameters for one generation."""

    model: str  # the catalog name the caller used
    upstream_model: str  # what the provider calls it
    prompt: str
    n: int
    size: str  # "WxH"
    seed: int | None = None
    params: dict[str, Any] = field(default_factory=dict)  # provider-specific extras

    @property
    def width(self) -> int:
        return int(self.size.split("x")[0])

    @property
    def height(self) -> int:
        return int(self.size.split("x")[1])


@dataclass(frozen=True)
class GeneratedImage:
    data: bytes
    revised_prompt: str | None = None


@dataclass(frozen=True)
class ProviderResult:
    images: list[GeneratedImage]
    # Normalised token counts (input_tokens, output_tokens, total_tokens, ...).
    usage: dict[str, int] = field(default_factory=dict)


class ProviderError(Exception):
    """A generation the provider could not do. `error_type` is machine-readable."""

    def __init__(
        self, message: str, *, error_type: str = "provider_error", status_code: int | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.error_type = error_type
        self.status_code = status_code


class Provider(Protocol):
    async def generate(self, request: ImageRequest) -> ProviderResult: ...
