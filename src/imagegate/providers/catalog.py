"""The model catalog: which models exist, what each accepts, and who serves it."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

SIZE_PATTERN = re.compile(r"^(\d{1,5})x(\d{1,5})$")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    provider: str
    description: str = ""
    upstream_model: str = ""
    max_prompt_chars: int = 32000
    max_n: int = 10
    default_size: str = "1024x1024"
    sizes: tuple[str, ...] = ()  # fixed list, or empty when size_range applies
    size_range: tuple[int, int] | None = None
    params: frozenset[str] = field(default_factory=frozenset)
    output_format: str = "png"

    def describe(self) -> dict[str, Any]:
        """What a client (GET /models, the web form) needs to offer this model's options."""
        return {
            "name": self.name,
            "provider": self.provider,
            "description": self.description,
            "max_n": self.max_n,
            "max_prompt_chars": self.max_prompt_chars,
            "default_size": self.default_size,
            "sizes": list(self.sizes),
            "size_range": list(self.size_range) if self.size_range else None,
            "params": sorted(self.params),
            "output_format": self.output_format,
        }

    def check_size(self, size: str) -> str:
        """The effective "WxH" for a requested size, or ValueError saying what is allowed."""
        if size == "auto":
            return self.default_size
        if self.sizes:
            if size not in self.sizes:
                raise ValueError(f"size must be one of {', '.join(self.sizes)}")
            return size
        match = SIZE_PATTERN.match(size)
        low, high = self.size_range or (1, 100_000)
        if not match:
            raise ValueError(f"size must look like WIDTHxHEIGHT, e.g. {self.default_size}")
        if not all(low <= int(side) <= high for side in match.groups()):
            raise ValueError(f"each side of size must be between {low} and {high} pixels")
        return f"{int(match[1])}x{int(match[2])}"


class Catalog:
    def __init__(self, models: dict[str, ModelSpec]) -> None:
        self.models = models

    def get(self, name: str) -> ModelSpec | None:
        return self.models.get(name)

    @property
    def names(self) -> list[str]:
        return sorted(self.models)


def _spec(name: str, raw: dict[str, Any]) -> ModelSpec:
    size_range = raw.get("size_range")
    return ModelSpec(
        name=name,
        provider=raw["provider"],
        description=raw.get("description", ""),
        upstream_model=raw.get("upstream_model", name.split("/", 1)[-1]),
        max_prompt_chars=int(raw.get("max_prompt_chars", 32000)),
        max_n=int(raw.get("max_n", 10)),
        default_size=raw.get("default_size", "1024x1024"),
        sizes=tuple(raw.get("sizes", ())),
        size_range=(int(size_range[0]), int(size_range[1])) if size_range else None,
        params=frozenset(raw.get("params", ())),
        output_format=raw.get("output_format", "png"),
    )


def load_catalog(path: Path | None = None) -> Catalog:
    """The packaged catalog, with an operator's file (if given) layered over it."""
    text = resources.files("imagegate.providers").joinpath("catalog.toml").read_text()
    raw = tomllib.loads(text)["models"]
    if path is not None:
        raw.update(tomllib.loads(path.read_text()).get("models", {}))
    return Catalog({name: _spec(name, spec) for name, spec in raw.items()})
